/**
 * The gateway's rich errors (google.rpc.Status details in grpc-status-details-bin), decoded.
 *
 * Every error carries exactly one google.rpc.ErrorInfo (domain "pkggov.internal", a stable
 * UPPER_SNAKE reason, the audit event id in its metadata); the other details are there when
 * the reason needs them (PolicyDenial for POLICY_DENIED, BadRequest for INVALID_ARGUMENT, ...).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  ResourceInfoSchema,
  RetryInfoSchema,
  type BadRequest_FieldViolation,
  type ErrorInfo,
  type QuotaFailure_Violation,
  type ResourceInfo,
} from "./gen/google/rpc/error_details_pb.js";
import { PolicyDenialSchema, type PolicyDenial } from "./gen/pkggov/v1/package_governance_pb.js";

/** gRPC's status code names, indexed by code (connect's Code enum has other spellings). */
const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** A failed call as the gateway described it. */
export interface PkggovError {
  /** The gRPC status code name, e.g. "PERMISSION_DENIED". */
  code: string;
  /** The status message. */
  message: string;
  /** ErrorInfo.reason, e.g. "POLICY_DENIED"; empty when the error has no ErrorInfo. */
  reason: string;
  /** ErrorInfo.metadata. */
  metadata: Record<string, string>;
  /** The audit event that records the call (ErrorInfo metadata "audit_event_id"), or "". */
  auditEventId: string;
  /**
   * The deletion request the error is about (ErrorInfo metadata "deletion_request_id"), or "".
   * For reason APPROVAL_REQUIRED it is the request the call recorded instead of deleting:
   * approvers vote on it (ApprovalService.ApproveDeletionRequest), then its requester runs it
   * (ApprovalService.ExecuteDeletionRequest).
   */
  deletionRequestId: string;
  /** The ErrorInfo itself, when the error carries one (errors not from the gateway do not). */
  errorInfo?: ErrorInfo;
  /** The denied versions of a POLICY_DENIED error. */
  policyDenial?: PolicyDenial;
  /** BadRequest's field violations (INVALID_ARGUMENT); empty when there are none. */
  fieldViolations: BadRequest_FieldViolation[];
  /** QuotaFailure's violations (VERSION_LIMIT_EXCEEDED, QUOTA_EXCEEDED). */
  quotaViolations: QuotaFailure_Violation[];
  /** The missing resource of a NOT_FOUND error. */
  resource?: ResourceInfo;
  /** How long to wait before retrying (RetryInfo), in milliseconds. */
  retryAfterMs?: number;
}

/** Decode any error thrown by a pkggov call (a ConnectError, or anything else as UNKNOWN). */
export function describeError(error: unknown): PkggovError {
  const connectError = ConnectError.from(error, Code.Unknown);
  const [errorInfo] = connectError.findDetails(ErrorInfoSchema);
  const [policyDenial] = connectError.findDetails(PolicyDenialSchema);
  const [resource] = connectError.findDetails(ResourceInfoSchema);
  const [retryInfo] = connectError.findDetails(RetryInfoSchema);
  const metadata = errorInfo?.metadata ?? {};
  const delay = retryInfo?.retryDelay;
  return {
    code: CODE_NAMES[connectError.code] ?? String(connectError.code),
    message: connectError.rawMessage,
    reason: errorInfo?.reason ?? "",
    metadata,
    auditEventId: metadata["audit_event_id"] ?? "",
    deletionRequestId: metadata["deletion_request_id"] ?? "",
    fieldViolations: connectError.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations),
    quotaViolations: connectError.findDetails(QuotaFailureSchema).flatMap((d) => d.violations),
    ...(errorInfo === undefined ? {} : { errorInfo }),
    ...(policyDenial === undefined ? {} : { policyDenial }),
    ...(resource === undefined ? {} : { resource }),
    ...(delay === undefined
      ? {}
      : { retryAfterMs: Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6) }),
  };
}
