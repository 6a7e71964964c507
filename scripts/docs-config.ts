/** `npm run docs:config`: rewrites the configuration table in README.md from src/config.ts. */
import { readFile, writeFile } from 'node:fs/promises';
import { settingsTable } from '../src/config.ts';

const START = '<!-- config:start -->';
const END = '<!-- config:end -->';
const file = new URL('../README.md', import.meta.url);
const readme = await readFile(file, 'utf8');
const a = readme.indexOf(START);
const b = readme.indexOf(END);
if (a < 0 || b < a) throw new Error(`README.md needs ${START} and ${END} markers`);
await writeFile(file, `${readme.slice(0, a + START.length)}\n${settingsTable()}\n${readme.slice(b)}`);
console.log('README.md configuration table updated');
