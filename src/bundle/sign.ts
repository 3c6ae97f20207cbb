/**
 * Bundle signatures: Ed25519 over the manifest, through node:crypto (no crypto of our own).
 *
 * A signed bundle has one more entry, `swift-fetch-bundle.sig`, right after the manifest:
 *
 *   { "format": "swift-fetch-bundle-signature", "version": 1, "algorithm": "ed25519",
 *     "keyId": "<sha256 hex of the public key's SPKI DER>", "publicKey": "<base64 SPKI DER>",
 *     "signature": "<base64, 64 bytes>" }
 *
 * What is signed is a fixed context string followed by the manifest's bytes exactly as the tar
 * holds them. The manifest names the SHA-256 of every blob and of every file, and the reader
 * hashes every blob against it, so the signature covers every byte of the bundle. The context
 * keeps a key that also signs other things from having one of those signatures pass as a bundle's.
 *
 * The key id is what `openssl pkey -pubin -in pub.pem -outform DER | sha256sum` prints, so an
 * operator can check which key a bundle names without swift-fetch.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { IntegrityError, UsageError } from '../core/errors.js';

export const SIGNATURE_NAME = 'swift-fetch-bundle.sig';
export const SIGNATURE_FORMAT = 'swift-fetch-bundle-signature';
/** A signature entry is a few hundred bytes; anything much larger is not one. */
export const MAX_SIGNATURE_BYTES = 16 * 1024;
const CONTEXT = Buffer.from('swift-fetch-bundle-manifest-v1\0');

export interface SigningKey {
  key: KeyObject;
  keyId: string;
  spki: Buffer;
}

export interface TrustedKey {
  key: KeyObject;
  keyId: string;
  /** Where it was read from (for messages). */
  file: string;
}

/** Who signed a bundle that was read, and whether that key was one the reader trusts. */
export interface Signer {
  keyId: string;
  trusted: boolean;
}

const base64 = (bytes: number) =>
  z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'expected base64').refine((s) => Buffer.from(s, 'base64').length === bytes, `expected ${bytes} bytes`);

const signatureSchema = z.strictObject({
  format: z.literal(SIGNATURE_FORMAT),
  version: z.literal(1),
  algorithm: z.literal('ed25519'),
  keyId: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits'),
  // An Ed25519 SPKI is 12 bytes of prefix and the 32-byte key.
  publicKey: base64(44),
  signature: base64(64),
});

function spkiOf(pub: KeyObject): Buffer {
  return pub.export({ format: 'der', type: 'spki' });
}

export function keyIdOf(pub: KeyObject): string {
  return createHash('sha256').update(spkiOf(pub)).digest('hex');
}

/** How a key id is shown to people: enough hex to tell keys apart. */
export function shortKeyId(keyId: string): string {
  return `sha256:${keyId.slice(0, 16)}`;
}

function readKeyFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`${what} ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'ESF_BAD_KEY');
  }
}

/** The Ed25519 private key in `file` (PEM, as `openssl genpkey -algorithm ed25519` writes it). */
export function loadSigningKey(file: string, what = '--sign'): SigningKey {
  const text = readKeyFile(file, what);
  // Asking for a passphrase has no place in a batch job: an encrypted key is refused up front.
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
    throw new UsageError(`${what} ${file}: the key is encrypted; give an unencrypted PEM key (openssl pkey -in ${file} -out plain.pem)`, 'ESF_BAD_KEY');
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(text);
  } catch {
    throw new UsageError(`${what} ${file}: not a PEM private key (make one with: openssl genpkey -algorithm ed25519 -out ${file})`, 'ESF_BAD_KEY');
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new UsageError(`${what} ${file}: a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; bundles are signed with Ed25519 keys (openssl genpkey -algorithm ed25519)`, 'ESF_BAD_KEY');
  const pub = createPublicKey(key);
  return { key, keyId: keyIdOf(pub), spki: spkiOf(pub) };
}

/** The Ed25519 public key in `file` (PEM, as `openssl pkey -in KEY -pubout` writes it). */
export function loadTrustedKey(file: string, what = '--trust'): TrustedKey {
  const text = readKeyFile(file, what);
  // A private key would do (its public half is in it), but a trust list is copied around: refuse it there.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    throw new UsageError(`${what} ${file}: holds a private key; trust the public key instead (openssl pkey -in ${file} -pubout)`, 'ESF_BAD_KEY');
  }
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch {
    throw new UsageError(`${what} ${file}: not a PEM public key (openssl pkey -in KEY -pubout writes one)`, 'ESF_BAD_KEY');
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new UsageError(`${what} ${file}: a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; bundle signatures are Ed25519`, 'ESF_BAD_KEY');
  return { key, keyId: keyIdOf(key), file };
}

/** The signature entry for `manifest` (its exact bytes in the tar). */
export function signManifest(manifest: Buffer, k: SigningKey): Buffer {
  const doc = {
    format: SIGNATURE_FORMAT,
    version: 1,
    algorithm: 'ed25519',
    keyId: k.keyId,
    publicKey: k.spki.toString('base64'),
    signature: sign(null, Buffer.concat([CONTEXT, manifest]), k.key).toString('base64'),
  };
  return Buffer.from(JSON.stringify(doc, null, 2) + '\n');
}

function refused(why: string, expected: string, found: string): IntegrityError {
  return new IntegrityError(`bundle signature refused: ${why}`, { expected, found, path: SIGNATURE_NAME });
}

/**
 * Check a bundle's signature entry (undefined: the bundle has none) over `manifest`. With trusted
 * keys, only a valid signature by one of them passes; without, a signature present must still be
 * valid for the key it names (a bundle is never read past a broken one). Throws IntegrityError
 * (exit 5); returns the signer, or undefined for an unsigned bundle nobody asked to be signed.
 */
export function checkSignature(entry: Buffer | undefined, manifest: Buffer, trust: readonly TrustedKey[]): Signer | undefined {
  const wanted = trust.map((t) => shortKeyId(t.keyId)).join(', ');
  if (entry === undefined) {
    if (trust.length === 0) return undefined;
    throw refused(`the bundle is not signed, and only bundles signed by a trusted key (${wanted}) are accepted`, `a signature by ${wanted}`, 'no signature');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(entry.toString('utf8'));
  } catch {
    throw refused(`${SIGNATURE_NAME} is not JSON (damaged or tampered)`, 'a signature document', 'unreadable');
  }
  const r = signatureSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw refused(`${SIGNATURE_NAME}: ${issue.path.join('.') || '(root)'}: ${issue.message}`, 'a signature document', 'malformed');
  }
  const doc = r.data;
  let embedded: KeyObject;
  try {
    embedded = createPublicKey({ key: Buffer.from(doc.publicKey, 'base64'), format: 'der', type: 'spki' });
  } catch {
    throw refused('the public key in the signature is not a key (tampered)', `key ${shortKeyId(doc.keyId)}`, 'garbage');
  }
  if (embedded.asymmetricKeyType !== 'ed25519' || keyIdOf(embedded) !== doc.keyId) {
    throw refused('the public key in the signature does not match its key id (tampered)', `key ${shortKeyId(doc.keyId)}`, 'another key');
  }
  const message = Buffer.concat([CONTEXT, manifest]);
  const signature = Buffer.from(doc.signature, 'base64');
  if (trust.length > 0) {
    const t = trust.find((k) => k.keyId === doc.keyId);
    if (!t) throw refused(`signed by key ${shortKeyId(doc.keyId)}, which is not trusted (trusted: ${wanted})`, `a signature by ${wanted}`, `a signature by ${shortKeyId(doc.keyId)}`);
    if (!verify(null, message, t.key, signature)) throw refused(`the signature by ${shortKeyId(doc.keyId)} does not match the manifest (tampered)`, 'a valid signature', 'an invalid signature');
    return { keyId: doc.keyId, trusted: true };
  }
  if (!verify(null, message, embedded, signature)) throw refused(`the signature by ${shortKeyId(doc.keyId)} does not match the manifest (tampered)`, 'a valid signature', 'an invalid signature');
  return { keyId: doc.keyId, trusted: false };
}
