export { cliPath, repoRoot } from './paths.js';
export { PYTHON_MISSING, pythonBin, pythonEnv, requirePython, runPython, skipWithoutPython } from './python.js';
export { run, runCli, type RunOptions, type RunResult } from './spawn.js';
export { mountTmpfs, tmpDir } from './tmp.js';
export { inCI } from './ci.js';
export { readTree } from './tree.js';
export { freePort } from './net.js';
export { startHostileServer, streamWithoutEnd, type HostileServer } from './hostile.js';
