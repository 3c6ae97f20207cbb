/** Looking a ref up in a lock file, as `pull --lock`, `init --lock` and the daemon's `lockFile:` do. */
import { UsageError } from '../core/errors.js';
import { formatRef, type ModelRef } from '../core/ref.js';
import type { PublishRecord, Store } from '../store/store.js';
import { readLockFile, type LoadedLock } from './file.js';
import { findPin, type LockedModel } from './format.js';
import { recordDifferences } from './pin.js';

/** `--lock FILE [--locked]` / `lockFile:` + `locked:`. */
export interface LockOption {
  file: string;
  /** Refuse (exit 2) refs the lock does not name, instead of pulling them unpinned. */
  strict?: boolean;
}

export interface Pinned {
  pin: LockedModel;
  /** The lock file as given (for messages). */
  file: string;
  loaded: LoadedLock;
}

/** The store's record of the locked commit, when it holds every locked file with the locked SHA-256. */
export async function pinnedRecord(store: Store, ref: ModelRef, pin: LockedModel): Promise<PublishRecord | undefined> {
  const rec = await store.readRecord(ref, pin.commit);
  return rec && recordDifferences(pin.files, rec.files).length === 0 ? rec : undefined;
}

/**
 * The lock entry that pins `ref`, read from the file now (so an edited lock applies to the next
 * pull); undefined when the lock does not name it and strict mode is off.
 */
export async function pinFor(ref: ModelRef, opt: LockOption): Promise<Pinned | undefined> {
  const loaded = await readLockFile(opt.file);
  const pin = findPin(loaded.lock, ref);
  if (pin) return { pin, file: opt.file, loaded };
  if (opt.strict) {
    const label = formatRef(ref);
    throw new UsageError(`${label} is not in the lock ${opt.file}, and locked mode refuses refs the lock does not name (add it with: swift-fetch lock --update ${label} -o ${opt.file})`, 'ESF_NOT_LOCKED');
  }
  return undefined;
}
