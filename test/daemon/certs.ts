/**
 * Certificates for the TLS tests, made by the openssl CLI in the test's own directory: a CA, and
 * server certificates it signs for given DNS names and IP addresses (P-256, valid two days).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { toolMissing } from '../support/tools.js';

export const OPENSSL_MISSING = toolMissing('openssl', 'to make the certificates of the TLS tests', ['version']);

export interface Pem {
  /** Path of the certificate (PEM). */
  cert: string;
  /** Path of its private key (PEM). */
  key: string;
}

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

export function makeCa(dir: string, name: string): Pem {
  mkdirSync(dir, { recursive: true });
  const ca = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  openssl(['req', '-x509', ...EC, '-keyout', ca.key, '-out', ca.cert, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return ca;
}

/** A server certificate signed by `ca` for `names` (DNS) and `ips`; a fresh key and serial each time. */
export function makeCert(dir: string, ca: Pem, name: string, san: { dns?: string[]; ip?: string[] }): Pem & { serial: string } {
  mkdirSync(dir, { recursive: true });
  const out = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const alt = [...(san.dns ?? []).map((d) => `DNS:${d}`), ...(san.ip ?? []).map((i) => `IP:${i}`)].join(',');
  writeFileSync(ext, `subjectAltName=${alt}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n`);
  openssl(['req', ...EC, '-keyout', out.key, '-out', csr, '-subj', `/CN=${name}`]);
  const serial = randomBytes(8).toString('hex').toUpperCase().replace(/^0+/, '1');
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', `0x${serial}`, '-out', out.cert, '-days', '2', '-extfile', ext]);
  return { ...out, serial };
}
