import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { StorageError } from '../core/errors.js';
import { currentBootId } from './host.js';

export { currentBootId } from './host.js';

/**
 * Node-local resume state for the transfer engine (better-sqlite3, WAL).
 *
 * A chunk row is written once the chunk's bytes have been written to the partial file. From then
 * on they survive the death of our process (SIGKILL, OOM kill): the kernel's page cache holds them.
 * They do not yet survive a kernel crash or power loss, so each row also says whether an
 * fdatasync has covered it, and each blob remembers the boot it was written in. A later run in
 * the same boot trusts every row; a run after a reboot trusts only the synced ones. This keeps
 * fsync off the critical path (a background sync runs every second) without ever trusting bytes
 * that may be gone. `synchronous = NORMAL` is enough under WAL: a lost commit costs a refetch,
 * never a wrong byte, and the whole-file hash is checked regardless.
 */

export interface BlobRow {
  key: string;
  size: number;
  chunkSize: number;
  /** What the origin said the content was (`etag|size`); a change restarts the file. */
  validator: string | null;
  /** Absolute path of the partial file this state describes. */
  path: string;
  /** `dev:ino` of that file when we created it: a renamed-away or replaced file is not ours. */
  fileId: string;
  /** The kernel boot in which unsynced chunk rows were written. */
  bootId: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
  key TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  chunk_size INTEGER NOT NULL,
  validator TEXT,
  path TEXT NOT NULL,
  file_id TEXT NOT NULL,
  boot_id TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
  key TEXT NOT NULL,
  idx INTEGER NOT NULL,
  synced INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (key, idx)
) WITHOUT ROWID;
`;

const SCHEMA_VERSION = '2';

interface Handle {
  db: Database.Database;
  refs: number;
  state: ResumeState;
}

const open = new Map<string, Handle>();

export class ResumeState {
  private readonly stmts;

  private constructor(
    private readonly db: Database.Database,
    readonly dir: string,
  ) {
    this.stmts = {
      getBlob: db.prepare('SELECT key, size, chunk_size AS chunkSize, validator, path, file_id AS fileId, boot_id AS bootId FROM blobs WHERE key = ?'),
      putBlob: db.prepare(
        `INSERT INTO blobs (key, size, chunk_size, validator, path, file_id, boot_id, updated_at) VALUES (@key, @size, @chunkSize, @validator, @path, @fileId, @bootId, @now)
         ON CONFLICT(key) DO UPDATE SET size = excluded.size, chunk_size = excluded.chunk_size, validator = excluded.validator,
           path = excluded.path, file_id = excluded.file_id, boot_id = excluded.boot_id, updated_at = excluded.updated_at`,
      ),
      dropUnsynced: db.prepare('DELETE FROM chunks WHERE key = ? AND synced = 0'),
      setBoot: db.prepare('UPDATE blobs SET boot_id = ?, updated_at = ? WHERE key = ?'),
      markSynced: db.prepare('UPDATE chunks SET synced = 1 WHERE key = ? AND idx = ?'),
      setValidator: db.prepare('UPDATE blobs SET validator = ?, updated_at = ? WHERE key = ?'),
      delChunks: db.prepare('DELETE FROM chunks WHERE key = ?'),
      delBlob: db.prepare('DELETE FROM blobs WHERE key = ?'),
      markChunk: db.prepare('INSERT INTO chunks (key, idx, synced) VALUES (?, ?, ?) ON CONFLICT(key, idx) DO UPDATE SET synced = max(synced, excluded.synced)'),
      doneChunks: db.prepare('SELECT idx FROM chunks WHERE key = ? ORDER BY idx').pluck(),
      syncedChunks: db.prepare('SELECT idx FROM chunks WHERE key = ? AND synced = 1 ORDER BY idx').pluck(),
      getMeta: db.prepare('SELECT v FROM meta WHERE k = ?').pluck(),
      putMeta: db.prepare('INSERT OR IGNORE INTO meta (k, v) VALUES (?, ?)'),
    };
  }

  /** Open (or share, within this process) the state database in `dir`. Pair with `release()`. */
  static acquire(dir: string): ResumeState {
    const existing = open.get(dir);
    if (existing) {
      existing.refs++;
      return existing.state;
    }
    let db: Database.Database;
    try {
      mkdirSync(dir, { recursive: true });
      db = new Database(join(dir, 'transfer.db'));
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('busy_timeout = 5000');
      db.exec('CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)');
      const version = db.prepare("SELECT v FROM meta WHERE k = 'schema'").pluck().get() as string | undefined;
      if (version !== undefined && version !== SCHEMA_VERSION) {
        // Resume state is a cache of work done: an unknown layout is dropped, costing a refetch.
        db.exec('DROP TABLE IF EXISTS chunks; DROP TABLE IF EXISTS blobs;');
      }
      db.exec(SCHEMA);
      db.prepare("INSERT OR REPLACE INTO meta (k, v) VALUES ('schema', ?)").run(SCHEMA_VERSION);
    } catch (e) {
      throw new StorageError(`cannot open the transfer state database in ${dir}: ${(e as Error).message}`, 'ESF_STATE', { cause: e });
    }
    const state = new ResumeState(db, dir);
    state.stmts.putMeta.run('node_id', randomBytes(6).toString('hex'));
    open.set(dir, { db, refs: 1, state });
    return state;
  }

  release(): void {
    const h = open.get(this.dir);
    if (!h || h.state !== this) return;
    if (--h.refs === 0) {
      open.delete(this.dir);
      h.db.close();
    }
  }

  /**
   * A random id made once per state directory. Partial file names carry it, so two nodes that
   * share one store volume never write into each other's partial files.
   */
  nodeId(): string {
    return this.stmts.getMeta.get('node_id') as string;
  }

  getBlob(key: string): BlobRow | undefined {
    return this.stmts.getBlob.get(key) as BlobRow | undefined;
  }

  /** Start a blob over: new row, no chunks. */
  resetBlob(row: BlobRow): void {
    this.db.transaction(() => {
      this.stmts.delChunks.run(row.key);
      this.stmts.putBlob.run({ ...row, now: Date.now() });
    })();
  }

  setValidator(key: string, validator: string): void {
    this.stmts.setValidator.run(validator, Date.now(), key);
  }

  /** Record a chunk whose bytes are written (`synced`: and covered by an fdatasync). */
  markChunk(key: string, idx: number, synced = false): void {
    this.stmts.markChunk.run(key, idx, synced ? 1 : 0);
  }

  markSynced(key: string, idxs: readonly number[]): void {
    this.db.transaction(() => {
      for (const i of idxs) this.stmts.markSynced.run(key, i);
    })();
  }

  /**
   * The chunks whose bytes can be trusted now. Rows written in another boot and never synced
   * are dropped: their bytes may have died with the page cache.
   */
  trustedChunks(key: string, bootId: string): number[] {
    const row = this.getBlob(key);
    if (row && (row.bootId !== bootId || bootId === '')) {
      this.db.transaction(() => {
        this.stmts.dropUnsynced.run(key);
        this.stmts.setBoot.run(bootId, Date.now(), key);
      })();
    }
    return this.stmts.doneChunks.all(key) as number[];
  }

  doneChunks(key: string): number[] {
    return this.stmts.doneChunks.all(key) as number[];
  }

  syncedChunks(key: string): number[] {
    return this.stmts.syncedChunks.all(key) as number[];
  }

  forget(key: string): void {
    this.db.transaction(() => {
      this.stmts.delChunks.run(key);
      this.stmts.delBlob.run(key);
    })();
  }
}

/**
 * Byte ranges `[start, end)` of `key` that are durable in its partial file, merged, in order,
 * plus that file's path. For a peer server that serves finished chunks of an in-progress file.
 */
export function durableRanges(stateDir: string, key: string): { path: string; size: number; ranges: Array<[number, number]> } | undefined {
  const st = ResumeState.acquire(stateDir);
  try {
    const row = st.getBlob(key);
    if (!row) return undefined;
    const ranges: Array<[number, number]> = [];
    for (const idx of row.bootId === currentBootId() && row.bootId !== '' ? st.doneChunks(key) : st.syncedChunks(key)) {
      const start = idx * row.chunkSize;
      const end = Math.min(row.size, start + row.chunkSize);
      const last = ranges[ranges.length - 1];
      if (last && last[1] === start) last[1] = end;
      else ranges.push([start, end]);
    }
    return { path: row.path, size: row.size, ranges };
  } finally {
    st.release();
  }
}
