/** Lock files: models pinned to commits and SHA-256s, for reproducible pulls (issue 14). */
export { readLockFile, writeLockFile, type LoadedLock } from './file.js';
export { DEFAULT_LOCK_FILE, LOCK_VERSION, findPin, formatLock, parseLock, pinnedRef, type Lock, type LockedFile, type LockedModel } from './format.js';
export { describeDifference, differenceError, listingDifferences, pinnedFiles, recordDifferences, type LockDifference } from './pin.js';
export { pinFor, pinnedRecord, type LockOption, type Pinned } from './pins.js';
export { checkModel, lockModel, type CheckResult, type ResolveOptions } from './resolve.js';
export { verifyStoreAgainstLock, type LockedStoreProblem, type LockedStoreResult } from './verify.js';
