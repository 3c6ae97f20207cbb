import { execFileSync } from 'node:child_process';

/**
 * Whether a test must skip for want of a command-line tool: true outside CI when `cmd` does not
 * run; under CI=true a missing tool throws instead, so the tests that need it fail rather than vanish.
 */
export function toolMissing(cmd: string, why: string, args: string[] = ['--version']): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return false;
  } catch {
    if (process.env.CI === 'true') throw new Error(`CI: ${cmd} is needed ${why}`);
    return true;
  }
}
