/**
 * The crates.io-index format: where a name's file lives, and a tolerant line parser. A bad
 * line is reported with its file and line number and skipped; it never stops a sync.
 */

/** One version line, as far as Herald relies on it (the rest is kept verbatim). */
export interface IndexEntry {
  name: string;
  vers: string;
  cksum: string;
  yanked: boolean;
  /** The line as parsed (unknown fields included). */
  raw: Record<string, unknown>;
}

/** A bad line: where it is and what is wrong with it. */
export interface LineProblem {
  file: string;
  line: number;
  message: string;
}

// crates.io's name rule, not the registry's (registry/names.ts): upstream names may have
// capitals (`Inflector`).
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const CKSUM_RE = /^[0-9a-f]{64}$/;

/** The index path of a crate name: `1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd…`, lower-cased. */
export function indexPath(name: string): string {
  const n = name.toLowerCase();
  if (n.length === 1) return `1/${n}`;
  if (n.length === 2) return `2/${n}`;
  if (n.length === 3) return `3/${n[0]}/${n}`;
  return `${n.slice(0, 2)}/${n.slice(2, 4)}/${n}`;
}

/** Parses one index file; good lines become entries, bad ones problems. */
export function parseIndexFile(file: string, text: string): { entries: IndexEntry[]; problems: LineProblem[] } {
  const entries: IndexEntry[] = [];
  const problems: LineProblem[] = [];
  const expectedName = file.split('/').pop()!;
  const parseLine = (line: string, i: number): void => {
    if (line.trim() === '') return;
    const bad = (message: string): void => {
      problems.push({ file, line: i + 1, message });
    };
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      return bad('not valid JSON');
    }
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad('not a JSON object');
    const r = raw as Record<string, unknown>;
    if (typeof r.name !== 'string' || !NAME_RE.test(r.name)) return bad(`bad or missing name ${JSON.stringify(r.name)?.slice(0, 80)}`);
    if (r.name.toLowerCase() !== expectedName) return bad(`name ${r.name} does not belong in ${file}`);
    if (typeof r.vers !== 'string' || r.vers.length === 0 || r.vers.length > 256) return bad('bad or missing vers');
    if (typeof r.cksum !== 'string' || !CKSUM_RE.test(r.cksum)) return bad('bad or missing cksum');
    if (typeof r.yanked !== 'boolean') return bad('bad or missing yanked');
    entries.push({ name: r.name, vers: r.vers, cksum: r.cksum, yanked: r.yanked, raw: r });
  };
  text.split('\n').forEach(parseLine);
  return { entries, problems };
}
