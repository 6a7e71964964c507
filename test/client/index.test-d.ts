/** The client's public surface, pinned: a change here is a change to the package API. */
import { describe, expectTypeOf, it } from 'vitest';
import type * as client from 'herald-client';
import { connect, type ClientState, type HeraldConnection, type HeraldEvent } from 'herald-client';

describe('client exports', () => {
  it('exports exactly connect and HeraldClientError as values', () => {
    expectTypeOf<keyof typeof client>().toEqualTypeOf<'connect' | 'HeraldClientError'>();
  });

  it('connect takes url/topics/onEvent and returns a HeraldConnection', () => {
    expectTypeOf(connect).parameter(0).toHaveProperty('url').toEqualTypeOf<string>();
    expectTypeOf(connect).parameter(0).toHaveProperty('topics').toEqualTypeOf<string[]>();
    expectTypeOf(connect).returns.toEqualTypeOf<HeraldConnection>();
    expectTypeOf<HeraldConnection['position']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<ClientState>().toEqualTypeOf<'connecting' | 'open' | 'reconnecting' | 'closed'>();
  });

  it('events are typed by the caller', () => {
    expectTypeOf<HeraldEvent<{ n: number }>['data']>().toEqualTypeOf<{ n: number }>();
    expectTypeOf<HeraldEvent['id']>().toEqualTypeOf<number>();
  });
});
