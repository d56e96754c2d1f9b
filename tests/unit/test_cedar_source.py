"""Cedar files split into statements at `;` outside strings and comments; errors get a line."""

from __future__ import annotations

import cedarpy

from pkggov_gateway.adapters.cedar_source import (
    PolicyLoadError,
    code_only,
    locate_error,
    split_statements,
)


def test_statements_split_at_semicolons_outside_strings_and_comments() -> None:
    """A `;` inside a string or a comment does not end a statement."""
    text = (
        "// a comment; with a semicolon\n"
        '@id("a;b") permit(principal, action, resource) when { context.peer == "x;\\"y" };\n'
        "\n"
        '@id("c")\n'
        "forbid(principal, action, resource); // trailing; comment\n"
    )
    statements = split_statements(text)
    assert [(2, True), (4, True)] == [(s.line, s.terminated) for s in statements]
    assert statements[0].text.rstrip().endswith('"x;\\"y" };')
    assert statements[1].text.strip().startswith('@id("c")')


def test_trailing_code_without_semicolon_is_an_unterminated_statement() -> None:
    """Code after the last `;` is kept (so its error is reported); comments alone are not."""
    statements = split_statements('@id("a") permit(principal, action, resource);\n\n@id("b")\n')
    assert [True, False] == [s.terminated for s in statements]
    assert 3 == statements[1].line
    assert 1 == len(split_statements('@id("a") permit(principal, action, resource);\n// end\n'))


def test_code_only_blanks_comments_and_keeps_offsets() -> None:
    """Comments become spaces; strings that look like comments are kept."""
    text = 'a // b\n"//c" d'
    assert 'a     \n"//c" d' == code_only(text)


def test_a_parse_error_is_located_on_the_line_holding_the_bad_token() -> None:
    """The shortest failing prefix of lines ends on the line of the bad token."""
    text = '@id("a")\npermit (\n  principal,\n  action action,\n  resource\n);'
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as err:
        message = str(err)
    assert 4 == locate_error(text, message, cedarpy.PolicySet.from_str, first_line=1)
    assert 13 == locate_error(text, message, cedarpy.PolicySet.from_str, first_line=10)


def test_an_error_naming_something_is_located_where_it_is_named() -> None:
    """Without a parser the line that mentions the quoted name is chosen, comments skipped."""
    text = "// vrsion\npermit (\n  principal, action, resource\n) when {\n resource.vrsion };"
    message = "attribute `vrsion` on entity type `Pkggov::PackageVersion` not found"
    assert 5 == locate_error(text, message)


def test_an_unlocatable_error_is_put_on_the_first_line_of_code() -> None:
    """With nothing to go on, the statement's first line of code."""
    assert 3 == locate_error("// c\n\npermit(principal, action, resource);", "the types differ")


def test_load_error_string_is_path_line_message() -> None:
    """str() is "path:line: message", or "path: message" without a line."""
    assert "p.cedar:3: bad" == str(PolicyLoadError("p.cedar", 3, "bad"))
    assert "p.cedar: bad" == str(PolicyLoadError("p.cedar", None, "bad"))
    error = PolicyLoadError("p.cedar", 3, "bad")
    assert ("p.cedar", 3, "bad") == (str(error.path), error.line, error.message)
