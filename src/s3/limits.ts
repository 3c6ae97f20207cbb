/**
 * S3's multipart limits and our push defaults, apart from the push itself so that the CLI can show
 * them in its help without loading the S3 client.
 */
const MiB = 1024 * 1024;
/** S3's limits: parts of 5 MiB at least (but the last), 10,000 parts at most. */
export const MIN_PART = 5 * MiB;
export const MAX_PARTS = 10_000;
export const DEFAULT_PART_SIZE = 64 * MiB;
export const DEFAULT_PUSH_CONNECTIONS = 8;
