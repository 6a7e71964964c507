/**
 * JSON from clients (request bodies, WebSocket messages), checked in one pass before anything
 * else touches it (issue 12). JSON.parse accepts what Herald cannot handle: values nested so
 * deep that JSON.stringify and zod, which recurse, overflow the stack (5,000 levels did), and
 * strings and numbers that PostgreSQL's text and jsonb refuse (`\u0000`, unpaired surrogates,
 * numbers beyond `numeric`). Those ended as `500 internal`; here each is a `400 bad_request`
 * naming what was found and where. The scan builds no values: it measures, and on request
 * reports where values start and end, so a caller can hand PostgreSQL the text as sent.
 */
import type { IncomingMessage } from 'node:http';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { HeraldError } from '../errors.ts';

/**
 * Most levels of nested arrays and objects accepted in client JSON (an event's `data`, a job
 * body, a WebSocket message); a scalar is 0 levels, `[[1]]` is 2. The most common parser
 * defaults that consumers meet: System.Text.Json 64, serde_json 128; so whatever Herald
 * delivers, every consumer can read. It is also far below what would strain a stack.
 */
export const JSON_MAX_DEPTH = 64;

// What PostgreSQL `numeric` (and so a jsonb number) holds: digits before and after the
// decimal point, with the exponent applied. Beyond them jsonb fails with 22003.
const NUMERIC_MAX_INTEGER_DIGITS = 131_072;
const NUMERIC_MAX_SCALE = 16_383;

/** Where a value lies in the scanned text, and what it costs. */
export interface JsonSpan {
  /** Offset of its first character. */
  start: number;
  /** Offset after its last character. */
  end: number;
  /**
   * Its size in UTF-8 bytes as sent but without whitespace between tokens, and with each
   * number as jsonb writes it out (`1e400` costs 401 bytes, not 5).
   */
  bytes: number;
  /** Levels of arrays and objects it nests (0 for a scalar). */
  levels: number;
}

export interface JsonScanOptions {
  /** What the text is, to begin each message: `body`, `message`. */
  what: string;
  /** Most levels the whole text may nest. */
  maxDepth: number;
  /**
   * Called as each value at most `visitDepth` containers deep ends, with its path of keys and
   * indexes from the root (valid only during the call); values ending later come later, so
   * the last of duplicated keys is reported last, as JSON.parse keeps it.
   */
  visit?: (path: readonly (string | number)[], span: JsonSpan) => void;
  visitDepth?: number;
}

interface Frame {
  isArray: boolean;
  start: number;
  bytes: number;
  /** The deepest level reached inside it, counted from the root. */
  deepest: number;
  index: number;
}

const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
// The escapes besides \u: \" \\ \/ \b \f \n \r \t.
const SIMPLE_ESCAPES = new Set([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);

const LITERALS = ['true', 'false', 'null'];
// Printable ASCII other than `"` and `\`: one byte each, nothing to check.
const PLAIN_RUN = /[\x20\x21\x23-\x5b\x5d-\x7e]+/y;

function hex4(text: string, at: number): number {
  const s = text.slice(at, at + 4);
  return /^[0-9a-fA-F]{4}$/.test(s) ? Number.parseInt(s, 16) : -1;
}

/**
 * Checks that `text` is one JSON value (RFC 8259) that Herald can store: at most `maxDepth`
 * levels deep, no NUL and no unpaired surrogate in any string or key, every number within
 * PostgreSQL `numeric`. Iterative, so no input can exhaust the stack. Returns the span of the
 * whole value. Throws bad_request naming the offset of the first problem.
 */
export function scanJson(text: string, opts: JsonScanOptions): JsonSpan {
  const { what, maxDepth } = opts;
  const visitDepth = opts.visit ? (opts.visitDepth ?? 0) : -1;
  const n = text.length;
  const open: Frame[] = [];
  // The key or index of the current child of each open container.
  const path: (string | number)[] = [];
  let i = 0;
  let bytes = 0;
  let root: JsonSpan | undefined;

  const fail = (message: string): never => {
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${what} ${message}`);
  };
  const unexpected = (expected: string): never =>
    fail(
      i >= n
        ? `is not valid JSON: it ends where ${expected} was expected`
        : `is not valid JSON: ${JSON.stringify(text[i])} at offset ${i} where ${expected} was expected`,
    );
  const nul = (): never =>
    fail(
      `has a NUL character (\\u0000) in a string or key at offset ${i}: PostgreSQL cannot store it in text or jsonb; remove it, or encode binary data (as base64, for example)`,
    );
  const surrogate = (): never =>
    fail(`has an unpaired UTF-16 surrogate in a string or key at offset ${i}: it is not a Unicode character and cannot be stored; send well-formed Unicode`);
  const skipSpace = () => {
    while (i < n && isSpace(text.charCodeAt(i))) i++;
  };

  const readString = () => {
    i++;
    bytes++;
    for (;;) {
      // Most strings are mostly printable ASCII: skip such runs in one step.
      PLAIN_RUN.lastIndex = i;
      if (PLAIN_RUN.test(text)) {
        bytes += PLAIN_RUN.lastIndex - i;
        i = PLAIN_RUN.lastIndex;
      }
      if (i >= n) return unexpected('the end of a string');
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        bytes++;
        return;
      }
      if (c === 0x5c) {
        const e = text.charCodeAt(i + 1);
        if (e === 0x75) {
          const unit = hex4(text, i + 2);
          if (unit < 0) return fail(`is not valid JSON: a bad \\u escape at offset ${i}`);
          if (unit === 0) return nul();
          if (unit >= 0xdc00 && unit <= 0xdfff) return surrogate();
          if (unit >= 0xd800 && unit <= 0xdbff) {
            const low = text.charCodeAt(i + 6) === 0x5c && text.charCodeAt(i + 7) === 0x75 ? hex4(text, i + 8) : -1;
            if (low < 0xdc00 || low > 0xdfff) return surrogate();
            i += 12;
            bytes += 12;
          } else {
            i += 6;
            bytes += 6;
          }
          continue;
        }
        if (!SIMPLE_ESCAPES.has(e)) return fail(`is not valid JSON: a bad escape at offset ${i}`);
        i += 2;
        bytes += 2;
        continue;
      }
      if (c < 0x20) {
        if (c === 0) return nul();
        return fail(`is not valid JSON: an unescaped control character (U+${c.toString(16).padStart(4, '0')}) in a string at offset ${i}`);
      }
      if (c >= 0xd800 && c <= 0xdfff) {
        // A raw surrogate (text not decoded from UTF-8): only a high one followed by a low one is a character.
        const next = text.charCodeAt(i + 1);
        if (c > 0xdbff || !(next >= 0xdc00 && next <= 0xdfff)) return surrogate();
        i += 2;
        bytes += 4;
        continue;
      }
      bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
      i++;
    }
  };

  // Validates a number and counts it as jsonb writes it: numeric keeps every digit but no
  // exponent, so 1e3 is stored (and read back) as 1000.
  const readNumber = () => {
    const start = i;
    const negative = text.charCodeAt(i) === 0x2d;
    if (negative) i++;
    const intStart = i;
    if (text.charCodeAt(i) === 0x30) i++;
    else if (isDigit(text.charCodeAt(i))) while (isDigit(text.charCodeAt(i))) i++;
    else return unexpected('a digit');
    const intDigits = i - intStart;
    let fracStart = i;
    let fracDigits = 0;
    if (text.charCodeAt(i) === 0x2e) {
      i++;
      fracStart = i;
      if (!isDigit(text.charCodeAt(i))) return unexpected('a digit');
      while (isDigit(text.charCodeAt(i))) i++;
      fracDigits = i - fracStart;
    }
    let exponent = 0;
    const e = text.charCodeAt(i);
    if (e === 0x65 || e === 0x45) {
      i++;
      const sign = text.charCodeAt(i);
      if (sign === 0x2b || sign === 0x2d) i++;
      if (!isDigit(text.charCodeAt(i))) return unexpected('a digit');
      const expStart = i;
      while (isDigit(text.charCodeAt(i))) i++;
      const digits = text.slice(expStart, i).replace(/^0+/, '');
      // PostgreSQL refuses exponents of a billion and more outright, even on zero.
      if (digits.length > 9) return fail(`has a number out of range at offset ${start}: PostgreSQL numeric cannot store it`);
      exponent = (sign === 0x2d ? -1 : 1) * Number(digits);
    }
    // Leading zeros of the digits (the integer part is "0" or has none).
    let zeros = 0;
    if (text.charCodeAt(intStart) === 0x30) {
      zeros = 1;
      while (zeros - 1 < fracDigits && text.charCodeAt(fracStart + zeros - 1) === 0x30) zeros++;
    }
    const isZero = zeros === intDigits + fracDigits;
    const integerDigits = isZero ? 1 : Math.max(1, intDigits + exponent - zeros);
    const scale = Math.max(0, fracDigits - exponent);
    if (integerDigits > NUMERIC_MAX_INTEGER_DIGITS || scale > NUMERIC_MAX_SCALE) {
      return fail(
        `has a number out of range at offset ${start}: PostgreSQL numeric stores at most ${NUMERIC_MAX_INTEGER_DIGITS} digits before the decimal point and ${NUMERIC_MAX_SCALE} after it`,
      );
    }
    bytes += (negative ? 1 : 0) + integerDigits + (scale > 0 ? scale + 1 : 0);
  };

  const readKey = () => {
    if (text.charCodeAt(i) !== 0x22) return unexpected('a key (a string)');
    const start = i;
    readString();
    // Keys are decoded only where a caller looks at them.
    if (open.length <= visitDepth) path[open.length - 1] = JSON.parse(text.slice(start, i)) as string;
    skipSpace();
    if (text.charCodeAt(i) !== 0x3a) return unexpected("':'");
    i++;
    bytes++;
    skipSpace();
  };

  const ended = (start: number, startBytes: number, levels: number) => {
    if (open.length === 0) root = { start, end: i, bytes: bytes - startBytes, levels };
    else if (open.length <= visitDepth) opts.visit!(path, { start, end: i, bytes: bytes - startBytes, levels });
  };

  skipSpace();
  for (;;) {
    // A value starts at i.
    const start = i;
    const startBytes = bytes;
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      if (open.length >= maxDepth) return fail(`nests more than ${maxDepth} levels of arrays and objects (at offset ${i}): flatten it`);
      const frame: Frame = { isArray: c === 0x5b, start, bytes: startBytes, deepest: open.length + 1, index: 0 };
      open.push(frame);
      i++;
      bytes++;
      skipSpace();
      if (text.charCodeAt(i) !== (frame.isArray ? 0x5d : 0x7d)) {
        if (frame.isArray) path[open.length - 1] = 0;
        else readKey();
        continue;
      }
      // Empty: it ends here, and the loop below closes it.
    } else {
      if (c === 0x22) readString();
      else if (c === 0x2d || isDigit(c)) readNumber();
      else {
        const literal = LITERALS.find((l) => text.startsWith(l, i));
        if (literal === undefined) return unexpected('a value');
        i += literal.length;
        bytes += literal.length;
      }
      ended(start, startBytes, 0);
    }
    // After a value: close containers until one continues with another member.
    for (;;) {
      skipSpace();
      const frame = open[open.length - 1];
      if (!frame) {
        if (i < n) return unexpected('the end');
        return root!;
      }
      const d = text.charCodeAt(i);
      if (d === 0x2c) {
        i++;
        bytes++;
        skipSpace();
        if (frame.isArray) path[open.length - 1] = ++frame.index;
        else readKey();
        break;
      }
      if (d !== (frame.isArray ? 0x5d : 0x7d)) return unexpected(frame.isArray ? "',' or ']'" : "',' or '}'");
      i++;
      bytes++;
      open.pop();
      path.length = open.length;
      const parent = open[open.length - 1];
      if (parent && frame.deepest > parent.deepest) parent.deepest = frame.deepest;
      ended(frame.start, frame.bytes, frame.deepest - open.length);
    }
  }
}

/** scanJson, then JSON.parse: a value that is safe to validate, serialize and store. */
export function parseJson(text: string, opts: JsonScanOptions): unknown {
  scanJson(text, opts);
  return JSON.parse(text);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The text of a body read by `express.raw` (already inflated per Content-Encoding): UTF-8
 * only, as RFC 8259 asks of JSON, and never with bytes silently replaced.
 */
export function bodyText(req: IncomingMessage & { body?: unknown }): string {
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(req.headers['content-type'] ?? '')?.[1]?.toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', `charset ${JSON.stringify(charset.slice(0, 40))} is not supported: send the body in UTF-8`);
  }
  const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  try {
    return UTF8.decode(raw);
  } catch {
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'body is not valid UTF-8: send JSON in UTF-8');
  }
}

/**
 * Body parsing for JSON routes, in place of `express.json`: an `application/json` body of at
 * most `limitBytes` is checked by scanJson (JSON_MAX_DEPTH levels) and parsed into `req.body`;
 * other types leave `req.body` undefined.
 */
export function jsonBody(limitBytes: number): RequestHandler {
  const raw = express.raw({ type: 'application/json', limit: limitBytes });
  return (req: Request, res: Response, next: NextFunction) =>
    raw(req, res, (err?: unknown) => {
      if (err) return next(err);
      try {
        if (Buffer.isBuffer(req.body)) req.body = parseJson(bodyText(req), { what: 'body', maxDepth: JSON_MAX_DEPTH });
      } catch (e) {
        return next(e);
      }
      next();
    });
}
