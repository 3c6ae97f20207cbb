import { pino, type Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * Paths pino must never print. Tokens travel in headers and options; every object we log that
 * could hold one is covered here, so a careless `log.info({ headers })` cannot leak a secret.
 */
export const REDACT_PATHS = [
  'authorization', 'cookie', 'token', 'hubHeaders', 'peerToken',
  '*.authorization', '*.cookie', '*.token', '*.hubHeaders', '*.peerToken',
  'headers.authorization', 'headers.cookie', '*.headers.authorization', '*.headers.cookie',
  'origin.hubHeaders', '*.origin.hubHeaders',
  // SigV4: the session token travels in its own header (the signature is in authorization).
  'headers["x-amz-security-token"]', '*.headers["x-amz-security-token"]', 'sessionToken', '*.sessionToken', 'secretAccessKey', '*.secretAccessKey',
];

/** The root logger: JSON lines on stderr (fd 2), secrets redacted. Children per module: `log.child({ module })`. */
export function createLogger(level: string = 'info', destination: number = 2): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: destination, sync: true }),
  );
}
