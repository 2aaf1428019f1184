// The host's side of the guest protocol: what it accepts from an untrusted guest, the seccomp
// program's encoding and the limits' floors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LineSplitter, cleanGuestText, parseGuestMessage } from '../../src/host/sandbox/guest-messages.ts';
import { seccompInstructions, seccompProgram } from '../../src/host/sandbox/seccomp.ts';
import { resolveLimits } from '../../src/host/sandbox/limits.ts';
import { deathReason } from '../../src/host/sandbox/guest-death.ts';

describe('guest messages', () => {
  it('accepts the four message kinds in their exact shape', () => {
    assert.deepEqual(parseGuestMessage('{"type":"progress","done":1,"total":2}'), { type: 'progress', done: 1, total: 2 });
    assert.deepEqual(parseGuestMessage('{"type":"result","value":{"a":[1]}}'), { type: 'result', value: { a: [1] } });
    assert.deepEqual(parseGuestMessage('{"type":"error","message":"bad"}'), { type: 'error', message: 'bad' });
    const need = { type: 'need-files', files: [{ role: 'backing', name: 'base.qcow2', format: 'qcow2', referrer: 0 }] };
    assert.deepEqual(parseGuestMessage(JSON.stringify(need)), need);
  });

  it('rejects anything else', () => {
    for (const bad of [
      'not json',
      '[1]',
      '{"type":"shell","cmd":"x"}',
      '{"type":"__proto__"}',
      '{"type":"toString"}',
      '{"type":"progress","done":-1,"total":2}',
      '{"type":"progress","done":1}',
      '{"type":"progress","done":1,"total":2,"extra":1}',
      '{"type":"error","message":7}',
      '{"type":"result"}',
      '{"type":"need-files","files":[{"role":"root","name":"x"}]}',
      '{"type":"need-files","files":[{"role":"backing","name":"x","path":"/etc"}]}',
      '{"type":"need-files","files":"x"}',
      '{"type":"need-files","files":[{"role":"backing","name":"x","referrer":-1}]}',
    ]) {
      assert.equal(typeof parseGuestMessage(bad), 'string', bad);
    }
  });

  it('cleans error text for the terminal', () => {
    assert.deepEqual(parseGuestMessage(JSON.stringify({ type: 'error', message: 'a\x1b[2Jb\nc\u202ed\x07' })), { type: 'error', message: 'a\\x1b[2Jb\nc\\u202ed\\x07' });
    assert.equal(cleanGuestText('x'.repeat(5000)).length, 4097);
  });

  it('splits lines across chunks and refuses an overlong line', () => {
    const s = new LineSplitter(10);
    assert.deepEqual(s.push(Buffer.from('ab')), []);
    assert.deepEqual(s.push(Buffer.from('c\nde\nf')), ['abc', 'de']);
    assert.equal(s.leftover, 1);
    assert.deepEqual(s.push(Buffer.from('0123456789')), { tooLong: true });
  });
});

describe('seccomp program', () => {
  it('is a whole number of 8-byte sock_filter records, checking the arch first', () => {
    const prog = seccompProgram();
    const insns = seccompInstructions();
    assert.equal(prog.length, insns.length * 8);
    assert.ok(insns.length < 4096, 'BPF_MAXINSNS');
    assert.deepEqual([prog.readUInt16LE(0), prog.readUInt32LE(4)], [0x20, 4]);
    assert.equal(prog.readUInt32LE(12), 0xc000003e);
    // Every jump lands inside the program.
    insns.forEach(([code, jt, jf], i) => {
      if ((code & 0x07) === 0x05) assert.ok(i + 1 + Math.max(jt, jf) < insns.length, `jump out of range at ${i}`);
    });
    assert.equal(insns[insns.length - 1][3], 0x7fff0000, 'default is allow');
  });
});

describe('limits and deaths', () => {
  it('keeps limits above what node needs to start', () => {
    const l = resolveLimits('info', [{ writable: false }], { memoryBytes: 1, openFiles: 3, cpuSeconds: 0 });
    assert.ok(l.memoryBytes >= 64 * 1024 * 1024);
    assert.ok(l.openFiles >= 32);
    assert.equal(l.cpuSeconds, 1);
    assert.equal(l.outputBytes, 0);
    assert.ok(resolveLimits('convert', [{ writable: false }, { writable: true }]).outputBytes > 1e12);
    assert.ok(resolveLimits('convert', []).wallMs > resolveLimits('info', []).wallMs);
    assert.ok(resolveLimits('info', Array(100).fill({ writable: false })).openFiles > 104);
  });

  it('names the cause of a guest death, through bwrap exit codes too', () => {
    assert.match(deathReason(null, 'SIGXCPU', '', false), /CPU time limit/);
    assert.match(deathReason(128 + 24, null, '', false), /CPU time limit/);
    assert.match(deathReason(134, null, 'FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory', false), /memory limit/);
    assert.match(deathReason(1, null, '', false), /without a result/);
  });
});
