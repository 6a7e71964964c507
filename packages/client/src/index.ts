/** The Herald client: the package's public TypeScript surface. */
export { connect, HeraldClientError } from './connection.js';
export type { ClientState, ConnectOptions, HeraldConnection, HeraldEvent, ReconnectInfo, WebSocketConstructor, WebSocketLike } from './connection.js';
