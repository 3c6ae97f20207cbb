/**
 * The shared peer token: a bearer token read from `peers.tokenFile` (a mounted Secret, re-read when
 * it changes). The node API's token works the same way, so both are one class in src/http.
 */
export { BearerToken as PeerToken } from '../http/bearer.js';
