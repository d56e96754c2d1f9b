/**
 * The pkggov TypeScript client: generated pkggov.v1 and google.rpc messages and services
 * (protobuf-es), a gRPC transport (connect-node) and the gateway's rich errors decoded.
 *
 * createClient, ConnectError and Code are re-exported so that a service needs no other
 * import, and its errors come from the same @connectrpc/connect as the transport.
 */
export { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
export * from "./gen/pkggov/v1/package_governance_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export {
  createPkggovTransport,
  PRINCIPAL_HEADER,
  type PkggovTransportOptions,
} from "./transport.js";
export { describeError, type PkggovError } from "./errors.js";
