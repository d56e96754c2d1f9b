"""Loading a policy set: the shipped set loads; every fault is refused with file, line, message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pkggov_gateway.adapters.cedar import (
    CedarPolicyEngine,
    PolicyFiles,
    PolicyLoadError,
    default_policy_files,
)

SHIPPED_IDS = [
    "auditors-may-read-audit",
    "ci-may-delete-dev-prereleases",
    "cleanup-planners",
    "github-main-may-delete-dev-unlisted-prereleases",
    "never-delete-latest",
    "never-delete-only-remaining-version",
    "prod-irreversible-needs-release-admin-approval",
    "prod-needs-release-admin-and-justification",
    "purge-now-needs-release-admin-and-justification",
    "release-admins-may-approve",
    "release-admins-may-delete",
    "release-admins-may-read-audit",
    "release-admins-may-restore",
    "requester-may-restore",
]

GOOD = '@id("good")\npermit (principal, action, resource);\n'


def copy_shipped(tmp_path: Path) -> PolicyFiles:
    """A writable copy of the shipped policy set."""
    root = tmp_path / "set"
    shutil.copytree(default_policy_files().schema.parent, root)
    return PolicyFiles(root / "pkggov.cedarschema", root / "policies", root / "entities.yaml")


def load_error(files: PolicyFiles) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as caught:
        CedarPolicyEngine(files)
    return caught.value


def test_shipped_set_loads_with_its_ids_groups_and_members() -> None:
    """The example set: thirteen policies in file order, three groups, the README's principals
    (alice and dave the release admins), each identity form of a person as that person."""
    engine = CedarPolicyEngine(default_policy_files())
    assert SHIPPED_IDS == engine.policy_ids()
    assert ("ci", "release-admins", "auditors") == engine.known_groups()
    assert ("auditors",) == engine.groups_of("carol")
    assert ("ci",) == engine.groups_of("ci-bot")
    assert ("ci",) == engine.groups_of("spiffe://pkggov.test/ci/builder")
    assert ("release-admins",) == engine.groups_of("alice")
    assert ("release-admins",) == engine.groups_of("spiffe://pkggov.test/ops/alice")
    assert () == engine.groups_of("bob")
    assert () == engine.groups_of("nobody")
    assert ("release-admins",) == engine.groups_of("dave")
    assert ("release-admins",) == engine.groups_of("spiffe://pkggov.test/ops/dave")
    assert ["prod-irreversible-needs-release-admin-approval"] == engine.approval_policy_ids()
    assert ("alice", "alice") == (
        engine.person_of("alice"),
        engine.person_of("spiffe://pkggov.test/ops/alice"),
    )
    assert ("dave", "dave") == (
        engine.person_of("dave"),
        engine.person_of("spiffe://pkggov.test/ops/dave"),
    )
    assert "ci-bot" == engine.person_of("spiffe://pkggov.test/ci/builder")
    assert "nobody" == engine.person_of("nobody")
    assert False is engine.uses_published_time()


def test_shipped_files_are_located_inside_the_package() -> None:
    """default_policy_files points at pkggov_gateway/policies, and every file exists."""
    files = default_policy_files()
    assert "pkggov_gateway" == files.schema.parent.parent.name
    assert all(path.exists() for path in (files.schema, files.policies, files.entities))


def test_policies_may_be_one_file(tmp_path: Path) -> None:
    """--policies may name a single .cedar file holding several policies."""
    files = copy_shipped(tmp_path)
    one = tmp_path / "all.cedar"
    one.write_text(GOOD + '\n@id("other")\nforbid (principal, action, resource);\n')
    engine = CedarPolicyEngine(PolicyFiles(files.schema, one, files.entities))
    assert ["good", "other"] == engine.policy_ids()


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A syntax error is reported at the line of the bad token, in the file it is in."""
    files = copy_shipped(tmp_path)
    bad = files.policies / "zz-bad.cedar"
    bad.write_text(
        GOOD
        + "\n// second policy\n"
        + '@id("bad")\n'
        + "permit (\n"
        + "  principal,\n"
        + "  action action,\n"
        + "  resource\n"
        + ");\n"
    )
    error = load_error(files)
    assert (bad, 8) == (error.path, error.line)
    assert "unexpected token" in error.message
    assert str(error).startswith(f"{bad}:8: ")


def test_missing_semicolon_is_reported_with_a_hint(tmp_path: Path) -> None:
    """The last policy without `;`: its first line, and a hint."""
    files = copy_shipped(tmp_path)
    bad = files.policies / "zz-bad.cedar"
    bad.write_text(GOOD + '\n@id("no-semicolon")\npermit (principal, action, resource)\n')
    error = load_error(files)
    assert (bad, 4) == (error.path, error.line)
    assert "is the closing ';' missing?" in error.message


def test_schema_violating_policy_names_file_line_and_policy(tmp_path: Path) -> None:
    """A policy reading an attribute the schema does not have is refused where it reads it."""
    files = copy_shipped(tmp_path)
    bad = files.policies / "zz-bad.cedar"
    bad.write_text(
        '@id("typo")\npermit (principal, action, resource)\nwhen {\n  resource.vrsion == "1"\n};\n'
    )
    error = load_error(files)
    assert (bad, 4) == (error.path, error.line)
    assert "does not conform to the schema" in error.message
    assert "for policy `typo`, attribute `vrsion`" in error.message


def test_unguarded_optional_attribute_is_a_schema_violation(tmp_path: Path) -> None:
    """published_at is optional: reading it without `has` is refused at load, not at run."""
    files = copy_shipped(tmp_path)
    (files.policies / "zz-age.cedar").write_text(
        '@id("age")\nforbid (principal, action == Pkggov::Action::"'
        'DeletePackageVersion", resource)\nwhen { resource.published_at > 0 };\n'
    )
    error = load_error(files)
    assert 3 == error.line
    assert "published_at" in error.message


def test_unknown_action_is_a_schema_violation(tmp_path: Path) -> None:
    """An action the schema does not declare is refused on the line naming it."""
    files = copy_shipped(tmp_path)
    (files.policies / "zz-action.cedar").write_text(
        '@id("typo")\npermit (\n  principal,\n'
        '  action == Pkggov::Action::"Delete",\n  resource\n);\n'
    )
    error = load_error(files)
    assert 4 == error.line
    assert 'Pkggov::Action::"Delete"' in error.message


def test_policy_without_id_is_refused(tmp_path: Path) -> None:
    """Every policy needs an @id: refused at the policy's first line."""
    files = copy_shipped(tmp_path)
    bad = files.policies / "zz-bad.cedar"
    bad.write_text(GOOD + "\n// no id\npermit (principal, action, resource);\n")
    error = load_error(files)
    assert (bad, 5) == (error.path, error.line)
    assert "@id" in error.message


def test_empty_id_is_refused(tmp_path: Path) -> None:
    """@id("") is no id."""
    files = copy_shipped(tmp_path)
    (files.policies / "zz-bad.cedar").write_text('@id("")\npermit (principal, action, resource);\n')
    assert 1 == load_error(files).line


def test_duplicate_id_is_refused_naming_both_places(tmp_path: Path) -> None:
    """Two policies with the same @id: the second is refused, the first is named."""
    files = copy_shipped(tmp_path)
    bad = files.policies / "zz-bad.cedar"
    bad.write_text('\n@id("never-delete-latest")\nforbid (principal, action, resource);\n')
    error = load_error(files)
    assert (bad, 2) == (error.path, error.line)
    assert "never-delete-latest.cedar:3" in error.message


def test_templates_are_refused(tmp_path: Path) -> None:
    """A template links to nothing here, so it would never apply: refused."""
    files = copy_shipped(tmp_path)
    (files.policies / "zz-bad.cedar").write_text(
        '@id("t")\npermit (principal == ?principal, action, resource);\n'
    )
    assert "templates" in load_error(files).message


def test_empty_policy_directory_is_refused(tmp_path: Path) -> None:
    """No policy at all would deny everything silently: refused."""
    files = copy_shipped(tmp_path)
    for path in files.policies.iterdir():
        path.unlink()
    error = load_error(files)
    assert (files.policies, None) == (error.path, error.line)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist is named."""
    files = copy_shipped(tmp_path)
    files.entities.unlink()
    assert files.entities == load_error(files).path


def test_schema_syntax_error_names_the_line(tmp_path: Path) -> None:
    """A schema that does not parse is refused at the bad token's line."""
    files = copy_shipped(tmp_path)
    text = files.schema.read_text()
    line = text[: text.index("is_latest: Bool,")].count("\n") + 1
    files.schema.write_text(text.replace("is_latest: Bool,", "is_latest Bool,"))
    error = load_error(files)
    assert (files.schema, line) == (error.path, error.line)


def test_schema_unknown_type_names_the_line(tmp_path: Path) -> None:
    """An unknown type in the schema is refused at the line naming it."""
    files = copy_shipped(tmp_path)
    text = files.schema.read_text()
    line = text[: text.index("published_at?: Long")].count("\n") + 1
    files.schema.write_text(text.replace("published_at?: Long", "published_at?: Lng"))
    error = load_error(files)
    assert (files.schema, line) == (error.path, error.line)
    assert "Lng" in error.message


def test_schema_not_describing_what_is_sent_is_refused(tmp_path: Path) -> None:
    """A schema whose context lacks an attribute the gateway sends is refused at load."""
    files = copy_shipped(tmp_path)
    text = files.schema.read_text()
    files.schema.write_text(text.replace("      auth_method: String,\n    },", "    },"))
    error = load_error(files)
    assert files.schema == error.path
    assert "does not describe what pkggov sends" in error.message


def test_entities_unknown_group_names_file_and_line(tmp_path: Path) -> None:
    """A principal in a group the file does not define: file, line and the group named."""
    files = copy_shipped(tmp_path)
    text = files.entities.read_text()
    line = text[: text.index("groups: [release-admins]")].count("\n") + 1
    files.entities.write_text(
        text.replace("groups: [release-admins]", "groups: [release-admin]", 1)
    )
    error = load_error(files)
    assert (files.entities, line) == (error.path, error.line)
    assert "unknown group 'release-admin'" in error.message


def test_entities_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    """YAML that does not parse: refused with the parser's line."""
    files = copy_shipped(tmp_path)
    files.entities.write_text("groups:\n  ci: {}\nprincipals: [\n")
    error = load_error(files)
    assert files.entities == error.path
    assert (4, True) == (error.line, error.message.startswith("invalid YAML"))  # at the end


def test_entities_unknown_key_and_duplicate_principal_are_refused(tmp_path: Path) -> None:
    """Typos in keys and a principal listed twice are refused, not silently ignored."""
    files = copy_shipped(tmp_path)
    files.entities.write_text("groups: {ci: {}}\nprincipals:\n  a: {grups: [ci]}\n")
    assert (3, "unknown key 'grups' (expected: description, groups, person)") == (
        load_error(files).line,
        load_error(files).message,
    )
    files.entities.write_text("groups: {ci: {}}\nprincipals:\n  a: {groups: [ci]}\n  a: {}\n")
    assert (4, "duplicate key 'a'") == (load_error(files).line, load_error(files).message)


def test_entities_may_be_json(tmp_path: Path) -> None:
    """An entities file ending in .json is read as JSON, and its errors get a line too."""
    files = copy_shipped(tmp_path)
    entities = tmp_path / "entities.json"
    document = {"groups": {"ci": {}}, "principals": {"svc": {"groups": ["ci"]}}}
    entities.write_text(json.dumps(document, indent=2))
    engine = CedarPolicyEngine(PolicyFiles(files.schema, files.policies, entities))
    assert ("ci",) == engine.groups_of("svc")
    document["principals"] = {"svc": {"groups": ["nope"]}}
    entities.write_text(json.dumps(document, indent=2))
    error = load_error(PolicyFiles(files.schema, files.policies, entities))
    assert (entities, 8) == (error.path, error.line)


def test_entities_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    """Only .yaml, .yml and .json are read."""
    files = copy_shipped(tmp_path)
    other = tmp_path / "entities.toml"
    other.write_text("")
    assert (
        "expected a .yaml" in load_error(PolicyFiles(files.schema, files.policies, other)).message
    )
