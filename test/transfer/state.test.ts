import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { ResumeState, currentBootId, durableRanges } from '../../src/state/resume.js';
import { tempDir } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function state() {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const st = ResumeState.acquire(t.dir);
  cleanups.push(() => st.release());
  return { st, dir: t.dir };
}

const row = (bootId: string) => ({ key: 'sha256:ab', size: 10, chunkSize: 4, validator: 'e|10', path: '/p/x.part', fileId: '1:2', bootId });

describe('resume state', () => {
  it('trusts unsynced chunks within the same boot only', () => {
    const { st } = state();
    const boot = currentBootId();
    expect(boot).toMatch(/^[0-9a-f-]{36}$/);
    st.resetBlob(row('an-earlier-boot'));
    st.markChunk('sha256:ab', 0, true);
    st.markChunk('sha256:ab', 1, false);
    st.markChunk('sha256:ab', 2, false);
    // After a reboot the page cache is gone: only the fsynced chunk survives.
    expect(st.trustedChunks('sha256:ab', boot)).toEqual([0]);
    // Rows written in this boot are trusted unsynced.
    st.markChunk('sha256:ab', 2, false);
    expect(st.trustedChunks('sha256:ab', boot)).toEqual([0, 2]);
    st.markSynced('sha256:ab', [2]);
    expect(st.syncedChunks('sha256:ab')).toEqual([0, 2]);
  });

  it('reports durable ranges merged, and forgets', () => {
    const { st, dir } = state();
    st.resetBlob(row(currentBootId()));
    for (const i of [0, 1]) st.markChunk('sha256:ab', i);
    expect(durableRanges(dir, 'sha256:ab')).toEqual({ path: '/p/x.part', size: 10, ranges: [[0, 8]] });
    st.markChunk('sha256:ab', 2);
    expect(durableRanges(dir, 'sha256:ab')!.ranges).toEqual([[0, 10]]);
    st.forget('sha256:ab');
    expect(durableRanges(dir, 'sha256:ab')).toBeUndefined();
    expect(st.getBlob('sha256:ab')).toBeUndefined();
  });

  it('drops a database of another schema version instead of misreading it', () => {
    const t = tempDir();
    cleanups.push(t.cleanup);
    const db = new Database(join(t.dir, 'transfer.db'));
    db.exec("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL); INSERT INTO meta VALUES ('schema', '1'); CREATE TABLE blobs (key TEXT PRIMARY KEY); INSERT INTO blobs VALUES ('sha256:ab'); CREATE TABLE chunks (key TEXT, idx INTEGER);");
    db.close();
    const st = ResumeState.acquire(t.dir);
    cleanups.push(() => st.release());
    expect(st.getBlob('sha256:ab')).toBeUndefined();
    st.resetBlob(row(currentBootId()));
    expect(st.getBlob('sha256:ab')!.chunkSize).toBe(4);
  });
});
