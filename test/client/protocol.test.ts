/**
 * The wire module's one table of error codes, and the lookups the client decides with: a
 * close code or a refused upgrade's status stands for one code or none, and whether to
 * retry is the error's own `retryable` when it says, the table's otherwise.
 */
import { describe, expect, it } from 'vitest';
import { isRetryable, WIRE_ERRORS, type WireErrorCode, wireCodeOfClose, wireCodeOfStatus } from 'herald-client/protocol';

const codes = Object.keys(WIRE_ERRORS) as WireErrorCode[];

describe('WIRE_ERRORS', () => {
  it('gives each close code that ends a connection to exactly one code, so a close says why', () => {
    const closing = codes.filter((c) => WIRE_ERRORS[c].closes);
    expect(closing.sort()).toEqual(['payload_too_large', 'rate_limited', 'shutting_down', 'slow_consumer']);
    expect(new Set(closing.map((c) => WIRE_ERRORS[c].closeCode)).size).toBe(closing.length);
    for (const c of closing) expect(wireCodeOfClose(WIRE_ERRORS[c].closeCode)).toBe(c);
    expect([1001, 1008, 1009, 4008].map(wireCodeOfClose)).toEqual(['shutting_down', 'rate_limited', 'payload_too_large', 'slow_consumer']);
  });

  it('names no code for a close code nobody closes with (1006, a dropped connection; 1011, shared)', () => {
    expect(wireCodeOfClose(1006)).toBeUndefined();
    expect(wireCodeOfClose(1011)).toBeUndefined();
    expect(wireCodeOfClose(4009)).toBeUndefined();
  });

  it('maps a status to a code only when one code has it, refinements aside (401 is unauthorized, though token_expired is a 401)', () => {
    expect([401, 403, 404, 410, 426].map(wireCodeOfStatus)).toEqual(['unauthorized', 'forbidden', 'not_found', 'cursor_expired', 'upgrade_required']);
    expect(codes.filter((c) => WIRE_ERRORS[c].httpStatus === 401).sort()).toEqual(['token_expired', 'unauthorized']);
    expect(codes.filter((c) => 'refines' in WIRE_ERRORS[c])).toEqual(['token_expired']);
    expect(wireCodeOfStatus(200)).toBeUndefined();
    // 409 (epoch_mismatch, cursor_ahead), 500 and 503 are shared: the body says which.
    for (const status of [409, 500, 503]) expect(wireCodeOfStatus(status)).toBeUndefined();
  });
});

describe('isRetryable', () => {
  it("takes the error's own flag first", () => {
    expect(isRetryable('unavailable', false)).toBe(false);
    expect(isRetryable('cursor_expired', true)).toBe(true);
  });

  it('falls back to the table, and retries a code it does not know (a newer server may send one)', () => {
    expect(codes.filter((c) => !isRetryable(c)).sort()).toEqual(
      [
        'bad_request',
        'config',
        'cursor_ahead',
        'cursor_expired',
        'epoch_mismatch',
        'forbidden',
        'idempotency_key_reused',
        'method_not_allowed',
        'not_found',
        'payload_too_large',
        'token_expired',
        'unauthorized',
        'unsupported_media_type',
        'upgrade_required',
      ].sort(),
    );
    expect(isRetryable('some_future_code')).toBe(true);
    expect(isRetryable('some_future_code', 'yes')).toBe(true);
  });
});
