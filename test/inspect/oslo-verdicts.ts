// oslo.utils' verdicts on the corpus of corpus.ts: the oracle for the inspector in CI (which cannot
// fetch oslo.utils). Obtained once, by hand, as docs/inspect.md describes: the corpus was built
// into a directory with buildCorpus(), and a one-off Python script outside the repository ran
// oslo.utils' format_inspector.detect_file_format() on every file (a checkout of
// openstack/oslo.utils master with the LUKS inspector, run by Debian 12's python3), then
// safety_check(); it printed the inspector's NAME, virtual_size, and either "safe" or the names
// of the failed checks; "Multiple formats detected" (ImageFormatError) is recorded as `multiple`.

export type OsloVerdict =
  | { safe: boolean; format: string; virtualSize: number; failures?: string[] }
  | { safe: false; multiple: string[] };

export const OSLO_VERDICTS: Record<string, OsloVerdict> = {
  'raw-blank': { safe: true, format: 'raw', virtualSize: 262144 },
  'raw-empty': { safe: true, format: 'raw', virtualSize: 0 },
  'qcow2-plain': { safe: true, format: 'qcow2', virtualSize: 1073741824 },
  'qcow2-v2': { safe: true, format: 'qcow2', virtualSize: 1073741824 },
  'qcow2-backing': { safe: false, format: 'qcow2', virtualSize: 67108864, failures: ['backing_file'] },
  'qcow2-data-file': { safe: false, format: 'qcow2', virtualSize: 67108864, failures: ['data_file'] },
  'qcow2-data-file-raw': { safe: false, format: 'qcow2', virtualSize: 67108864, failures: ['data_file'] },
  'qcow2-unknown-incompat': { safe: false, format: 'qcow2', virtualSize: 67108864, failures: ['unknown_features'] },
  'qcow2-extended-l2': { safe: false, format: 'qcow2', virtualSize: 67108864, failures: ['unknown_features'] },
  'qcow2-dirty-bit': { safe: true, format: 'qcow2', virtualSize: 67108864 },
  'qcow2-zstd': { safe: true, format: 'qcow2', virtualSize: 67108864 },
  'qcow2-encrypted': { safe: true, format: 'qcow2', virtualSize: 67108864 },
  'qcow2-bitmap': { safe: true, format: 'qcow2', virtualSize: 67108864 },
  'qcow2-absurd-size': { safe: true, format: 'qcow2', virtualSize: 1152921504606846976 },
  'qcow-v1': { safe: false, format: 'qcow2', virtualSize: 67108864, failures: ['unknown_features'] },
  'vmdk-monolithic-sparse': { safe: true, format: 'vmdk', virtualSize: 104857600 },
  'vmdk-stream-optimized': { safe: true, format: 'vmdk', virtualSize: 104857600 },
  'vmdk-stream-footer': { safe: true, format: 'vmdk', virtualSize: 104857600 },
  'vmdk-stream-bad-footer': { safe: false, format: 'vmdk', virtualSize: 104857600, failures: ['footer'] },
  'vmdk-monolithic-flat': { safe: false, format: 'vmdk', virtualSize: 0, failures: ['descriptor'] },
  'vmdk-two-gb-sparse': { safe: false, format: 'vmdk', virtualSize: 0, failures: ['descriptor'] },
  'vmdk-parent-hint': { safe: true, format: 'vmdk', virtualSize: 10485760 },
  'vmdk-extent-path': { safe: false, format: 'vmdk', virtualSize: 10485760, failures: ['descriptor'] },
  'vmdk-bad-version': { safe: false, format: 'vmdk', virtualSize: 0, failures: ['descriptor'] },
  'vmdk-moved-descriptor': { safe: false, format: 'vmdk', virtualSize: 0, failures: ['descriptor'] },
  'vpc-dynamic': { safe: true, format: 'vhd', virtualSize: 104865792 },
  'vpc-fixed': { safe: true, format: 'raw', virtualSize: 262144 },
  'vpc-fixed-truncated': { safe: true, format: 'raw', virtualSize: 262144 },
  'vpc-differencing': { safe: true, format: 'vhd', virtualSize: 104865792 },
  'vhdx-dynamic': { safe: true, format: 'vhdx', virtualSize: 104857600 },
  'vhdx-differencing': { safe: true, format: 'vhdx', virtualSize: 104857600 },
  luks: { safe: true, format: 'luks', virtualSize: -1806336 },
  'luks-truncated': { safe: true, format: 'luks', virtualSize: -2002944 },
  vdi: { safe: true, format: 'vdi', virtualSize: 67108864 },
  qed: { safe: false, format: 'qed', virtualSize: 262144, failures: ['banned'] },
  parallels: { safe: true, format: 'raw', virtualSize: 262144 },
  iso: { safe: true, format: 'iso', virtualSize: 131072 },
  'iso-truncated-volume': { safe: true, format: 'iso', virtualSize: 8388608 },
  'mbr-disk': { safe: true, format: 'gpt', virtualSize: 262144 },
  'mbr-bad-boot-flag': { safe: false, format: 'gpt', virtualSize: 262144, failures: ['mbr'] },
  'mbr-past-end': { safe: true, format: 'gpt', virtualSize: 262144 },
  'mbr-overlap': { safe: true, format: 'gpt', virtualSize: 262144 },
  'fat-boot-record': { safe: true, format: 'raw', virtualSize: 262144 },
  'gpt-disk': { safe: true, format: 'gpt', virtualSize: 262144 },
  'gpt-extra-mbr-partition': { safe: false, format: 'gpt', virtualSize: 262144, failures: ['mbr'] },
  'gpt-outside-usable': { safe: true, format: 'gpt', virtualSize: 262144 },
  'polyglot-iso-qcow2': { safe: false, multiple: ['iso', 'qcow2'] },
  'polyglot-mbr-qcow2': { safe: false, multiple: ['gpt', 'qcow2'] },
  'polyglot-gpt-vhdx': { safe: false, multiple: ['gpt', 'vhdx'] },
  'polyglot-mbr-vmdk': { safe: false, multiple: ['gpt', 'vmdk'] },
  'polyglot-iso-mbr': { safe: false, multiple: ['gpt', 'iso'] },
};

/**
 * Where instar deliberately disagrees with oslo.utils: each case is one oslo passes and instar
 * refuses (instar is never more lenient), with the reason.
 */
export const STRICTER_THAN_OSLO: Record<string, string> = {
  'raw-blank': 'content matching no format is safe only when declared raw (oslo calls anything unknown raw)',
  'fat-boot-record': 'a bare filesystem is unrecognised content: safe only when declared raw',
  'qcow2-absurd-size': 'a 1 EiB virtual size is absurd (oslo has no size check)',
  'vmdk-parent-hint': 'qemu follows parentFileNameHint to open a parent; oslo allows any header field',
  'vpc-differencing': 'a differencing VHD names a parent file; oslo does not look at the disk type',
  'vhdx-differencing': 'a VHDX with a parent locator names a parent file; oslo only reads the size',
  parallels: 'no safety checks exist for parallels images (oslo does not know the format and calls it raw)',
  'iso-truncated-volume': 'an ISO volume larger than the file',
  'vpc-fixed-truncated': 'a fixed VHD whose footer claims more disk than the file holds',
  'luks-truncated': 'a LUKS payload offset past the end of the file',
  'mbr-past-end': 'an MBR partition ends past the end of the file',
  'mbr-overlap': 'two MBR partitions overlap',
  'gpt-outside-usable': "a GPT partition lies outside the header's usable area",
};
