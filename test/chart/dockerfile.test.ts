/**
 * The Dockerfile checked statically: hadolint (the Dockerfile linter, with .hadolint.yaml) plus this
 * image's own rules read from the parsed AST (dockerfile-ast, the parser behind the VS Code Docker
 * language service). test/image/ builds nothing: it runs the image .ci/build-image.sh built.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { findTool, mustHave, repoRoot, requireTool } from './support.js';

const dockerfileText = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');
const dockerfile = DockerfileParser.parse(dockerfileText);
const stages = dockerfile.getFROMs();
const runtime = stages.at(-1)!;
const runtimeLine = runtime.getRange().start.line;
const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string>; engines: { node: string } };

/** Instructions of the stage that starts at `from`. */
function stageInstructions(name: string | null): Instruction[] {
  const i = stages.findIndex((f) => f.getBuildStage() === name);
  const start = stages[i]!.getRange().start.line;
  const end = stages[i + 1]?.getRange().start.line ?? Number.MAX_SAFE_INTEGER;
  return dockerfile.getInstructions().filter((x) => {
    const l = x.getRange().start.line;
    return l >= start && l < end;
  });
}

const runtimeInstructions = () => stageInstructions(runtime.getBuildStage());
const text = (ins: Instruction) => ins.getRawArgumentsContent() ?? '';
const keyword = (ins: Instruction) => ins.getKeyword().toUpperCase();

/** ARG defaults declared before the first FROM (what the FROM lines expand). */
const globalArgs = Object.fromEntries(
  dockerfile.getInitialARGs().map((a) => [a.getProperty()!.getName(), a.getProperty()!.getValue() ?? '']),
);

describe('Dockerfile (static)', () => {
  it('is multi-stage, every stage that starts from Node starts from ARG BASE_IMAGE', () => {
    expect(stages.length).toBeGreaterThanOrEqual(3);
    const external = stages.filter((f) => !stages.some((s) => s.getBuildStage() === f.getImageName()));
    // One base for all stages (the native module compiled in the builder has the runtime's Node
    // ABI), and swappable: where Docker Hub is out of reach the same file builds on a local base.
    expect(external.map((f) => f.getImage())).toEqual(external.map(() => '${BASE_IMAGE}'));
    expect(external.length).toBeGreaterThanOrEqual(2);
  });

  it('defaults BASE_IMAGE to a pinned official slim Node image in step with engines and the local base', () => {
    const image = globalArgs.BASE_IMAGE;
    const m = /^node:(\d+)\.(\d+)\.(\d+)-(bookworm|trixie)-slim$/.exec(image ?? '');
    expect(m, `BASE_IMAGE default ${image} must be node:<major.minor.patch>-<debian>-slim`).not.toBeNull();
    const [major, minor] = [Number(m![1]), Number(m![2])];
    expect(major % 2, 'an LTS (even) Node major').toBe(0);
    // In step with package.json: the major engines names (the one the local Debian base ships and
    // the image tests run), at a version engines accepts.
    const [minMajor, minMinor] = /(\d+)\.(\d+)/.exec(pkg.engines.node)!.slice(1).map(Number) as [number, number];
    expect(major).toBe(minMajor);
    expect(minor).toBeGreaterThanOrEqual(minMinor);
    // The same Debian release as the base .ci/build-base.sh bootstraps, so both builds agree on libc.
    const suite = /^SUITE="\$\{SWIFT_FETCH_BASE_SUITE:-(\w+)\}"$/m.exec(readFileSync(join(repoRoot, '.ci/build-base.sh'), 'utf8'));
    expect(suite?.[1]).toBe(m![4]);
  });

  it('compiles in a builder stage with python3, make and g++, and installs production deps only for the runtime', () => {
    const all = dockerfile.getInstructions().map(text).join('\n');
    expect(all).toMatch(/apt-get install[^\n]*python3[^\n]*make[^\n]*g\+\+|apt-get install[\s\S]*?python3 make g\+\+/);
    const prod = stages.find((f) => stageInstructions(f.getBuildStage()).some((i) => keyword(i) === 'RUN' && /npm ci --omit=dev/.test(text(i))));
    expect(prod, 'a stage running npm ci --omit=dev').toBeDefined();
    const copies = dockerfile.getCOPYs().filter((c) => c.getRange().start.line > runtimeLine);
    const nodeModules = copies.find((c) => /node_modules/.test(text(c)));
    expect(nodeModules, 'runtime copies node_modules').toBeDefined();
    expect(nodeModules!.getFromFlag()?.getValue()).toBe(prod!.getBuildStage());
    expect(copies.some((c) => /\/app\/dist/.test(text(c)) && c.getFromFlag())).toBe(true);
    // No compiler, npm install or build in the runtime stage.
    for (const i of runtimeInstructions().filter((x) => keyword(x) === 'RUN')) {
      expect(text(i)).not.toMatch(/\bg\+\+|\bmake\b|python3|npm (ci|install)|npm run/);
    }
  });

  it('runs as a numeric non-root USER', () => {
    const users = runtimeInstructions().filter((i) => keyword(i) === 'USER');
    expect(users.length).toBe(1);
    const m = /^(\d+)(?::(\d+))?$/.exec(text(users[0]!).trim());
    expect(m, 'USER uid[:gid] numeric').not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    // The chart's default runAsUser is the same user, so hostPath permissions line up.
    const values = readFileSync(join(repoRoot, 'chart/swift-fetch/values.yaml'), 'utf8');
    expect(values).toMatch(new RegExp(`runAsUser: ${m![1]}\\b`));
  });

  it('runs swift-fetch through the bin shim with tini as PID 1', () => {
    const eps = dockerfile.getENTRYPOINTs();
    expect(eps.length).toBe(1);
    expect(eps[0]!.getArgumentsContent()?.trim()).toBe('["swift-fetch"]');
    const all = runtimeInstructions().map(text).join('\n');
    expect(all).toMatch(/apt-get install[^\n]*\btini\b/);
    // The swift-fetch on PATH execs tini, which runs node on the package's bin shim.
    const shim = Object.values(pkg.bin)[0]!.replace(/^\.\//, '');
    expect(all).toMatch(new RegExp(`exec /usr/bin/tini -s -- node /app/${shim.replace('.', '\\.')} "\\$@"`));
    expect(all).toMatch(/> \/usr\/local\/bin\/swift-fetch/);
    expect(runtimeInstructions().some((i) => keyword(i) === 'COPY' && /^bin\s/.test(text(i)))).toBe(true);
  });

  it('carries the OCI image labels', () => {
    const labels = runtimeInstructions()
      .filter((i) => keyword(i) === 'LABEL')
      .map(text)
      .join('\n');
    for (const k of ['title', 'description', 'version', 'revision', 'created', 'licenses', 'base.name']) {
      expect(labels).toContain(`org.opencontainers.image.${k}=`);
    }
    // The base label names the base the image was really built on.
    expect(labels).toMatch(/org\.opencontainers\.image\.base\.name="\$\{BASE_IMAGE\}"/);
    expect(runtimeInstructions().some((i) => keyword(i) === 'ARG' && text(i).trim() === 'BASE_IMAGE')).toBe(true);
  });

  it('exposes the daemon port the chart uses', () => {
    const expose = runtimeInstructions().filter((i) => keyword(i) === 'EXPOSE').map(text);
    expect(expose).toEqual(['7070']);
  });

  it('keeps node_modules, .venv, .git and tests out of the build context', () => {
    const ignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const p of ['node_modules', '.venv', '.git', 'test', 'dist', '.cache']) expect(ignore).toContain(p);
    // …but not what the build needs.
    for (const p of ['src', 'bin', 'package.json', 'package-lock.json', 'tsconfig.json']) expect(ignore).not.toContain(p);
  });
});

const hadolintPath = findTool('hadolint', 'HADOLINT_BIN');
describe.skipIf(!requireTool('hadolint', hadolintPath, 'HADOLINT_BIN'))('hadolint', () => {
  it('finds nothing in the Dockerfile', async () => {
    const bin = mustHave('hadolint', hadolintPath, 'HADOLINT_BIN');
    const args = ['--config', join(repoRoot, '.hadolint.yaml'), '--format', 'json', join(repoRoot, 'Dockerfile')];
    let out: string;
    try {
      out = (await promisify(execFile)(bin, args)).stdout;
    } catch (e) {
      out = (e as { stdout?: string }).stdout ?? '';
      if (!out) throw e;
    }
    const findings = (JSON.parse(out) as { code: string; line: number; message: string }[]).map((f) => `${f.line} ${f.code} ${f.message}`);
    expect(findings).toEqual([]);
  });

  it('would report a root runtime user (the linter is live)', async () => {
    const bin = mustHave('hadolint', hadolintPath, 'HADOLINT_BIN');
    const bad = 'FROM node:20.20.2-trixie-slim\nUSER root\nRUN cd /tmp && echo hi\n';
    const child = execFile(bin, ['--no-fail', '--format', 'json', '-']);
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => (buf += d.toString()));
    child.stdin!.end(bad);
    await new Promise<void>((res, rej) => child.on('close', (code) => (code === 0 ? res() : rej(new Error(`hadolint exited ${code}`)))));
    const codes = (JSON.parse(buf) as { code: string }[]).map((f) => f.code);
    expect(codes).toContain('DL3002');
    expect(codes).toContain('DL3003');
  });
});
