/**
 * Which process this is, in terms another process can check: node-local resume state trusts
 * unsynced chunks only within one kernel boot, and a lease or a work folder on a shared volume
 * names its holder so that a contender that can see the holder's PID can tell whether it died.
 *
 * A PID means something only to processes of the same kernel boot and the same PID namespace (in
 * Kubernetes every pod has its own, and pods on other nodes share nothing): anyone else can only
 * wait for a lease to expire. A PID is also reused, so the holder is named by PID plus the start
 * time the kernel gives that process (/proc/<pid>/stat, field 22).
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

/** Identifies the running kernel boot ('' when unknown: then only synced chunks are trusted). */
export function currentBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

export interface ProcessIdentity {
  /** For people (and the pod's name in Kubernetes); not part of the liveness check. */
  host: string;
  pid: number;
  /** Kernel boot id. */
  boot: string;
  /** `pid:[inode]` of the PID namespace the pid belongs to. */
  pidns: string;
  /** Start time of the process in clock ticks after boot: tells a reused pid from the holder. */
  pidStart: string;
}

let own: ProcessIdentity | undefined;

/** This process, as a lease or a work folder records its holder ('' fields where /proc is unavailable). */
export function ownIdentity(): ProcessIdentity {
  if (own === undefined || own.pid !== process.pid) {
    own = { host: hostname(), pid: process.pid, boot: currentBootId(), pidns: readNs(), pidStart: startTime(process.pid) ?? '' };
  }
  return own;
}

function readNs(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
}

/** Field 22 of /proc/<pid>/stat, or undefined when there is no such process (or it is a zombie). */
function startTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself hold spaces or parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  // A killed process its parent has not reaped yet is a zombie: it holds nothing any more.
  if (state === 'Z' || state === 'X') return undefined;
  return fields[19];
}

export type Liveness = 'alive' | 'dead' | 'unknown';

/**
 * Whether the process `who` names still runs, as far as this process can know: 'unknown' unless
 * both run in the same boot and PID namespace and `who` carries everything the check needs
 * (records written by older versions do not).
 */
export function processLiveness(who: Partial<ProcessIdentity>): Liveness {
  const me = ownIdentity();
  if (!who.boot || !who.pidns || !who.pidStart || typeof who.pid !== 'number' || !(who.pid > 0)) return 'unknown';
  if (me.boot === '' || me.pidns === '' || who.boot !== me.boot || who.pidns !== me.pidns) return 'unknown';
  return startTime(who.pid) === who.pidStart ? 'alive' : 'dead';
}
