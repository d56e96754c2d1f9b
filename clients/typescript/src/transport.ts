/**
 * The gRPC (HTTP/2) transport to a pkggov gateway, built on @connectrpc/connect-node.
 */
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";

/** The metadata key that names the caller to a gateway in development identity mode. */
export const PRINCIPAL_HEADER = "x-pkggov-principal";

/** Where and how to reach a gateway. */
export interface PkggovTransportOptions {
  /**
   * "http://127.0.0.1:50051" for plaintext (a development gateway on loopback), or
   * "https://pkggov.example.internal:443" for TLS.
   */
  baseUrl: string;
  /**
   * The development identity, sent as x-pkggov-principal. Only a gateway in development mode
   * reads it; in production the caller is its client certificate (`tls`).
   */
  principal?: string;
  /** TLS material for an https baseUrl: `ca`, and `cert` with `key` for mTLS (PEM). */
  tls?: Pick<SecureClientSessionOptions, "ca" | "cert" | "key" | "servername">;
  /** More interceptors, run after the one that adds the principal. */
  interceptors?: Interceptor[];
}

/** A gRPC transport to the gateway; share it: it keeps one HTTP/2 connection. */
export function createPkggovTransport(options: PkggovTransportOptions): Transport {
  const interceptors: Interceptor[] = [];
  const principal = options.principal;
  if (principal !== undefined) {
    interceptors.push((next) => (request) => {
      request.header.set(PRINCIPAL_HEADER, principal);
      return next(request);
    });
  }
  interceptors.push(...(options.interceptors ?? []));
  return createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors,
    ...(options.tls === undefined ? {} : { nodeOptions: options.tls }),
  });
}
