// A scratch tree for path-policy tests:
//   <base>/img/top.qcow2, b.raw, sub/c.raw        files inside the default root (img/)
//   <base>/img/inlink -> sub/c.raw                  symlink staying inside
//   <base>/img/abslink -> <base>/img/b.raw          absolute symlink staying inside
//   <base>/img/outlink -> /etc/passwd               symlink out of the allowlist
//   <base>/img/outback -> ../outside/back -> ../img/b.raw   goes out, comes back (relative)
//   <base>/img/absoutback -> <base>/outside/back    the same through an absolute target
//   <base>/img/fifo, <base>/img/dir                 a FIFO and a directory
//   <base>/outside/secret.raw, <base>/extra/x.raw   outside the default root
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, rmSync, realpathSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Tree {
  base: string;
  img: string;
  top: string;
  cleanup(): void;
}

export function makeTree(): Tree {
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'instar-paths-')));
  const img = join(base, 'img');
  mkdirSync(join(img, 'sub'), { recursive: true });
  mkdirSync(join(img, 'dir'));
  mkdirSync(join(base, 'outside'));
  mkdirSync(join(base, 'extra'));
  for (const f of ['img/top.qcow2', 'img/b.raw', 'img/sub/c.raw', 'outside/secret.raw', 'extra/x.raw']) {
    writeFileSync(join(base, f), f);
  }
  symlinkSync('sub/c.raw', join(img, 'inlink'));
  symlinkSync(join(img, 'b.raw'), join(img, 'abslink'));
  symlinkSync('/etc/passwd', join(img, 'outlink'));
  symlinkSync('../img/b.raw', join(base, 'outside', 'back'));
  symlinkSync('../outside/back', join(img, 'outback'));
  symlinkSync(join(base, 'outside', 'back'), join(img, 'absoutback'));
  const fifo = spawnSync('mkfifo', [join(img, 'fifo')]);
  if (fifo.status !== 0) throw new Error(`mkfifo failed: ${fifo.stderr}`);
  return { base, img, top: join(img, 'top.qcow2'), cleanup: () => rmSync(base, { recursive: true, force: true }) };
}
