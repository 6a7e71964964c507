#!/usr/bin/env node
// The `herald` command: the compiled CLI (dist/cli.js, made by `npm run build`, which
// `npm install` runs), with plain node. No TypeScript tooling is loaded at run time.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('herald: not built yet: run `npm run build` in the herald folder');
  process.exit(1);
}
const { main } = await import(entry.href);
await main(process.argv);
