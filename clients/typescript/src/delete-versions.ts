/**
 * `node dist/delete-versions.js`: one DeletePackageVersions call; the response, or the decoded
 * error, as JSON on standard output (proto JSON field names). Exits 0 on OK, 1 on an error,
 * 2 on a usage error.
 */
import { toJson } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { describeError, type PkggovError } from "./errors.js";
import {
  BadRequest_FieldViolationSchema,
  ErrorInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import {
  DeletePackageVersionsResponseSchema,
  PackageFormatSchema,
  PackageGovernanceService,
  PolicyDenialSchema,
  type PackageFormat,
} from "./gen/pkggov/v1/package_governance_pb.js";
import { createPkggovTransport } from "./transport.js";

const USAGE = `usage: delete-versions --target HOST:PORT [--principal NAME]
  [--cacert PEM [--cert PEM --key PEM]] --domain D --repository R --format npm|pypi|...
  [--namespace N] --package P [--justification TEXT] [--dry-run] [--allow-partial]
  [--request-id UUID] VERSION...`;

class UsageError extends Error {}

const OPTIONS = {
  target: { type: "string" },
  principal: { type: "string" },
  cacert: { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  domain: { type: "string" },
  repository: { type: "string" },
  format: { type: "string" },
  namespace: { type: "string", default: "" },
  package: { type: "string" },
  justification: { type: "string", default: "" },
  "dry-run": { type: "boolean", default: false },
  "allow-partial": { type: "boolean", default: false },
  "request-id": { type: "string", default: "" },
} as const;

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === "") {
    throw new UsageError(`--${flag} is required`);
  }
  return value;
}

/** "npm" or "PACKAGE_FORMAT_NPM" to the enum value. */
function packageFormat(name: string): PackageFormat {
  const wanted = name.toUpperCase().replace(/^(PACKAGE_FORMAT_)?/, "PACKAGE_FORMAT_");
  const value = PackageFormatSchema.values.find((v) => v.name === wanted && v.number !== 0);
  if (value === undefined) {
    throw new UsageError(`unknown --format ${name}`);
  }
  return value.number as PackageFormat;
}

/** The error as JSON: the code, reason and audit event id, and the details in proto JSON. */
function errorJson(error: PkggovError): object {
  return {
    code: error.code,
    message: error.message,
    reason: error.reason,
    auditEventId: error.auditEventId,
    errorInfo: error.errorInfo && toJson(ErrorInfoSchema, error.errorInfo),
    policyDenial: error.policyDenial && toJson(PolicyDenialSchema, error.policyDenial),
    fieldViolations: error.fieldViolations.map((v) => toJson(BadRequest_FieldViolationSchema, v)),
  };
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: OPTIONS,
    allowPositionals: true,
  });
  const target = required(values.target, "target");
  if (positionals.length === 0) {
    throw new UsageError("name at least one VERSION");
  }
  const tls =
    values.cacert === undefined
      ? undefined
      : {
          ca: readFileSync(values.cacert),
          ...(values.cert === undefined ? {} : { cert: readFileSync(values.cert) }),
          ...(values.key === undefined ? {} : { key: readFileSync(values.key) }),
        };
  const transport = createPkggovTransport({
    baseUrl: `${tls === undefined ? "http" : "https"}://${target}`,
    ...(values.principal === undefined ? {} : { principal: values.principal }),
    ...(tls === undefined ? {} : { tls }),
  });
  const client = createClient(PackageGovernanceService, transport);
  try {
    const response = await client.deletePackageVersions(
      {
        domain: required(values.domain, "domain"),
        repository: required(values.repository, "repository"),
        format: packageFormat(required(values.format, "format")),
        namespace: values.namespace,
        package: required(values.package, "package"),
        versions: positionals,
        justification: values.justification,
        validateOnly: values["dry-run"],
        allowPartial: values["allow-partial"],
        requestId: values["request-id"],
      },
      { timeoutMs: 30_000 },
    );
    console.log(JSON.stringify(toJson(DeletePackageVersionsResponseSchema, response)));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      throw error;
    }
    console.log(JSON.stringify(errorJson(describeError(error))));
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (error: unknown) => {
    const usage =
      error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") === true;
    console.error(`delete-versions: ${error instanceof Error ? error.message : String(error)}`);
    if (usage) {
      console.error(USAGE);
    }
    process.exitCode = usage ? 2 : 1;
  },
);
