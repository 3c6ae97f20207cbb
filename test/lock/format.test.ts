/** The lock file format on its own: strict reading, deterministic writing, ref matching. */
import { describe, expect, it } from 'vitest';
import { ExitCode, IntegrityError, UsageError } from '../../src/core/errors.js';
import { parseRef } from '../../src/core/ref.js';
import { findPin, formatLock, parseLock, pinnedFiles, type Lock, type LockedModel } from '../../src/lock/index.js';
import { publicEndpoint } from '../../src/lock/format.js';

const C1 = 'a'.repeat(40);
const C2 = 'b'.repeat(40);
const S = (c: string) => c.repeat(64);

const tiny: LockedModel = {
  ref: 'hf://demo/tiny@main',
  hub: 'hf',
  endpoint: 'http://127.0.0.1:1',
  commit: C1,
  files: [
    { path: 'z.json', size: 2, sha256: S('1'), gitOid: '1'.repeat(40) },
    { path: 'a/b.bin', size: 3, sha256: S('2') },
  ],
};
const other: LockedModel = { ref: 'ms://demo/other@master', hub: 'ms', endpoint: 'http://127.0.0.1:1', commit: C2, include: ['*.json', '*.bin', '*.json'], files: [{ path: 'c.json', size: 1, sha256: S('3') }] };

function badLock(text: string): UsageError {
  try {
    parseLock(text, 'test.lock');
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    expect((e as UsageError).exitCode).toBe(ExitCode.usage);
    return e as UsageError;
  }
  throw new Error('the lock was accepted');
}

describe('formatLock', () => {
  it('writes the same bytes whatever order models, files and patterns come in, with one trailing newline', () => {
    const a = formatLock({ lockfileVersion: 1, models: [tiny, other] });
    const b = formatLock({ lockfileVersion: 1, models: [other, { ...tiny, files: [...tiny.files].reverse() }] });
    expect(b).toBe(a);
    expect(a.endsWith('}\n')).toBe(true);
    expect(a.endsWith('\n\n')).toBe(false);
    const parsed = JSON.parse(a) as Lock;
    expect(parsed.models.map((m) => m.ref)).toEqual(['hf://demo/tiny@main', 'ms://demo/other@master']);
    expect(parsed.models[0]!.files.map((f) => f.path)).toEqual(['a/b.bin', 'z.json']);
    // Duplicate patterns collapse, sorted; keys in one fixed order.
    expect(parsed.models[1]!.include).toEqual(['*.bin', '*.json']);
    expect(Object.keys(parsed.models[1]!)).toEqual(['ref', 'hub', 'endpoint', 'commit', 'include', 'files']);
  });

  it('round-trips through parseLock', () => {
    const text = formatLock({ lockfileVersion: 1, models: [tiny, other] });
    expect(formatLock(parseLock(text, 'x'))).toBe(text);
  });
});

describe('parseLock refuses, with exit 2 and the place named', () => {
  const good = JSON.parse(formatLock({ lockfileVersion: 1, models: [tiny] })) as { models: Array<Record<string, unknown> & { files: Array<Record<string, unknown>> }> };
  const edited = (fn: (l: typeof good) => void) => {
    const l = structuredClone(good);
    fn(l);
    return JSON.stringify(l);
  };

  it('text that is not JSON', () => {
    expect(badLock('{"lockfileVersion": 1, "models": [').message).toMatch(/^invalid lock file test\.lock: not JSON/);
  });
  it('a sha256 that is not 64 hex digits', () => {
    const e = badLock(edited((l) => (l.models[0]!.files[1]!.sha256 = 'abc')));
    expect(e.message).toBe('invalid lock file test.lock: models[0].files[1].sha256: expected 64 lowercase hex digits');
  });
  it('an unknown key, a missing commit, a negative size, another version', () => {
    expect(badLock(edited((l) => (l.models[0]!.url = 'x'))).message).toMatch(/models\[0\]: Unrecognized key/i);
    expect(badLock(edited((l) => delete l.models[0]!.commit)).message).toMatch(/models\[0\]\.commit/);
    expect(badLock(edited((l) => (l.models[0]!.files[0]!.size = -1))).message).toMatch(/models\[0\]\.files\[0\]\.size/);
    expect(badLock('{"lockfileVersion": 2, "models": []}').message).toMatch(/lockfileVersion 2/);
  });
  it('a hostile path, a ref that is not canonical or disagrees with its hub, a ref listed twice', () => {
    expect(badLock(edited((l) => (l.models[0]!.files[0]!.path = '../etc/passwd'))).message).toMatch(/unsafe path/);
    expect(badLock(edited((l) => (l.models[0]!.ref = 'hf://demo/tiny'))).message).toMatch(/canonical form \(expected hf:\/\/demo\/tiny@main\)/);
    expect(badLock(edited((l) => (l.models[0]!.hub = 'ms'))).message).toMatch(/hub is "ms" but the ref is on "hf"/);
    expect(badLock(edited((l) => l.models.push(structuredClone(l.models[0]!)))).message).toMatch(/listed twice/);
  });
});

describe('findPin', () => {
  const lock: Lock = { lockfileVersion: 1, models: [tiny, other] };
  it('matches a ref by its canonical form (the default revision filled in), or by the locked commit', () => {
    expect(findPin(lock, parseRef('hf://demo/tiny'))).toBe(tiny);
    expect(findPin(lock, parseRef(`hf://demo/tiny@${C1}`))).toBe(tiny);
    expect(findPin(lock, parseRef('hf://demo/tiny@v2'))).toBeUndefined();
    expect(findPin(lock, parseRef(`hf://demo/tiny@${C2}`))).toBeUndefined();
    expect(findPin(lock, parseRef('ms://demo/tiny'))).toBeUndefined();
  });
});

describe('pinnedFiles', () => {
  const listing = (files: Array<{ path: string; size: number; sha256?: string; gitOid?: string }>, commit = C1) => ({
    ref: parseRef('hf://demo/tiny'), commit, files: files.map((f) => ({ ...f, lfs: f.sha256 !== undefined })),
  });
  it('takes the lock\'s SHA-256 for every file, the hub\'s git oid and LFS flag, and narrows by --include', () => {
    const files = pinnedFiles(tiny, listing([{ path: 'z.json', size: 2, gitOid: '1'.repeat(40) }, { path: 'a/b.bin', size: 3, sha256: S('2') }, { path: 'extra', size: 9, sha256: S('9') }]), 'l');
    expect(files).toEqual([
      { path: 'z.json', size: 2, sha256: S('1'), gitOid: '1'.repeat(40), lfs: false },
      { path: 'a/b.bin', size: 3, sha256: S('2'), lfs: true },
    ]);
    expect(pinnedFiles(tiny, listing([{ path: 'z.json', size: 2 }, { path: 'a/b.bin', size: 3 }]), 'l', ['*.json']).map((f) => f.path)).toEqual(['z.json']);
  });
  it('fails with exit 5, naming the file, where the hub lists the locked commit otherwise', () => {
    const cases: Array<[ReturnType<typeof listing>, RegExp]> = [
      [listing([{ path: 'z.json', size: 2 }]), /a\/b\.bin: 3 bytes in the lock, not listed at the hub/],
      [listing([{ path: 'z.json', size: 2 }, { path: 'a/b.bin', size: 4 }]), /a\/b\.bin: 3 bytes in the lock, 4 bytes at the hub/],
      [listing([{ path: 'z.json', size: 2 }, { path: 'a/b.bin', size: 3, sha256: S('7') }]), new RegExp(`a/b\\.bin: sha256:${S('2')} in the lock, sha256:${S('7')} at the hub`)],
      [listing([{ path: 'z.json', size: 2, gitOid: '2'.repeat(40) }, { path: 'a/b.bin', size: 3 }]), /z\.json: git:1{40} in the lock, git:2{40} at the hub/],
      [listing([], C2), new RegExp(`commit ${C2} at the hub, ${C1} in the lock`)],
    ];
    for (const [l, message] of cases) {
      let err: unknown;
      try {
        pinnedFiles(tiny, l, 'my.lock');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(IntegrityError);
      expect((err as IntegrityError).exitCode).toBe(ExitCode.integrity);
      expect((err as Error).message).toMatch(/^hf:\/\/demo\/tiny@main \(a{12}\) differs from the lock my\.lock: /);
      expect((err as Error).message).toMatch(message);
    }
  });
});

describe('publicEndpoint', () => {
  it('never writes credentials or a query into a lock', () => {
    expect(publicEndpoint('https://user:secret@hub.example/base/?token=x#y')).toBe('https://hub.example/base');
    expect(publicEndpoint('https://huggingface.co')).toBe('https://huggingface.co');
  });
});
