/** The Herald client: the package's public TypeScript surface. */
export { connect, HeraldClientError } from './connection.ts';
export type { ClientState, ConnectOptions, HeraldConnection, HeraldEvent, WebSocketConstructor, WebSocketLike } from './connection.ts';
