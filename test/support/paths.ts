import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the repository root (the folder holding package.json). */
export const repoRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The CLI entry point `runCli` spawns. */
export const cliPath: string = resolve(repoRoot, 'bin', 'swift-fetch.js');
