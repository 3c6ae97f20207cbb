/**
 * The token bucket is pure (an injected clock, no I/O) and lives in core now. This module stays
 * only so that code importing it from here keeps compiling; import from core/rate-limiter.js or
 * the transfer package entry (index.js) instead.
 */
export { RateLimiter, type Clock } from '../core/rate-limiter.js';
