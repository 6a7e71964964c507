/**
 * Server errors take their wire mapping from the wire module's one table: each HERALD_ERR_*
 * names a wire code, and its status, close code and retryable flag are that code's. The body
 * every transport sends carries `retryable`, and details never replace the fixed fields.
 */
import { WIRE_ERRORS } from 'herald-client/protocol';
import { describe, expect, it } from 'vitest';
import { ERROR_SPECS, type ErrorCode, formatZodIssue, HeraldError } from '../src/errors.ts';

describe('HeraldError', () => {
  it('takes status, close code, closes and retryable from its wire code, for every code', () => {
    for (const code of Object.keys(ERROR_SPECS) as ErrorCode[]) {
      const e = new HeraldError(code, 'm');
      const wire = WIRE_ERRORS[ERROR_SPECS[code]];
      expect([e.wire, e.httpStatus, e.closeCode, e.closes, e.retryable], code).toEqual([
        ERROR_SPECS[code],
        wire.httpStatus,
        wire.closeCode,
        wire.closes,
        wire.retryable,
      ]);
    }
  });

  it('sends {code, message, retryable} after its details, so a detail cannot replace them', () => {
    const e = new HeraldError('HERALD_ERR_POSITION_EXPIRED', 'gone', { oldest: 8, head: 9, code: 'x', retryable: true });
    expect(e.toWire()).toEqual({ error: { oldest: 8, head: 9, code: 'cursor_expired', message: 'gone', retryable: false } });
  });
});

describe('formatZodIssue', () => {
  it('is `path: message` for the first issue, naming the whole value at the root', () => {
    expect(formatZodIssue({ issues: [{ path: ['events', 0, 'topic'], message: 'Required' }] }, 'body')).toBe('events.0.topic: Required');
    expect(formatZodIssue({ issues: [{ path: [], message: 'Expected object' }] }, 'message')).toBe('message: Expected object');
    expect(formatZodIssue({ issues: [] }, 'body')).toBe('body: invalid');
  });
});
