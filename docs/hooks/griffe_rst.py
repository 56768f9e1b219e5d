"""Griffe extension: turn the reStructuredText markup of flowfit's docstrings into Markdown.

flowfit's docstrings are Google style with Sphinx roles inside (``:math:`...```,
``.. math::``, ``:class:`~flowfit.Flow```). mkdocstrings renders Markdown, so before
rendering this extension rewrites each docstring:

- ``:math:`x``` becomes ``$x$`` and a ``.. math::`` block becomes ``$$ ... $$``;
  ``pymdownx.arithmatex`` marks both and ``docs/hooks/build.py`` turns them into MathML.
- ``:class:``, ``:func:``, ``:meth:``, ``:attr:``, ``:data:``, ``:mod:`` and ``:exc:``
  become links when the name resolves to a public flowfit object, and inline code
  otherwise (private names, torch, numpy). A ``flowfit.`` name that does not resolve is
  logged as a warning, so ``mkdocs build --strict`` fails on a broken reference.
- A ``References:`` block becomes a list with one entry per reference.

It also fills gaps, as :func:`inspect.getdoc` would: a method without a docstring
gets that of the method it overrides, and a module constant gets the comment lines
just above its assignment. Class attributes without a docstring (mostly instance
attributes set in ``__init__``) are left out of the pages.
"""

from __future__ import annotations

import logging
import re
import textwrap

import griffe

# mkdocs counts warnings of every logger under "mkdocs", so --strict fails on these.
logger = logging.getLogger("mkdocs.plugins.flowfit_docstrings")

ROLE = re.compile(r":(math|class|func|meth|attr|data|mod|exc|obj):`([^`]+)`")
MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")
URL = re.compile(r"(?<![<(])(https?://[^\s)>]+[^\s)>.,;])")


class RstToMarkdown(griffe.Extension):
    """Rewrite the docstrings of every loaded object once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: object) -> None:
        for obj in list(_walk(pkg)):
            if obj.is_class:
                _inherit_docstrings(obj)
                _drop_undocumented_attributes(obj)
            elif obj.is_module:
                _document_constants(obj)
        seen: set[str] = set()
        for obj in _walk(pkg):
            if obj.path in seen or obj.docstring is None:
                continue
            seen.add(obj.path)
            obj.docstring.value = convert(obj.docstring.value, obj)


def _inherit_docstrings(cls: griffe.Class) -> None:
    """Give a method without a docstring that of the same method in a base class.

    This is what :func:`inspect.getdoc` does, so an override such as ``config`` shows
    the contract it implements. Bases outside flowfit are not loaded and give nothing.
    """
    try:
        bases = cls.mro()
    except (griffe.AliasResolutionError, griffe.CyclicAliasError, ValueError):
        return
    for name, member in cls.members.items():
        if member.is_alias or member.docstring is not None or not member.is_function:
            continue
        for base in bases:
            inherited = base.members.get(name)
            if inherited is not None and not inherited.is_alias and inherited.docstring:
                member.docstring = griffe.Docstring(
                    inherited.docstring.value, parent=member,
                    parser=inherited.docstring.parser,
                    parser_options=inherited.docstring.parser_options,
                )
                break


def _drop_undocumented_attributes(cls: griffe.Class) -> None:
    for name, member in list(cls.members.items()):
        if not member.is_alias and member.is_attribute and member.docstring is None:
            del cls.members[name]


def _document_constants(module: griffe.Module) -> None:
    """Use the comment block above each exported constant as its docstring."""
    try:
        lines = module.lines
    except (OSError, ValueError):
        return
    for name in module.exports or ():
        member = module.members.get(name)
        if member is None or member.is_alias or not member.is_attribute:
            continue
        if member.docstring is not None or member.lineno is None:
            continue
        comment: list[str] = []
        index = member.lineno - 2
        while index >= 0 and lines[index].lstrip().startswith("#"):
            comment.insert(0, lines[index].lstrip()[1:].strip())
            index -= 1
        if comment:
            member.docstring = griffe.Docstring(
                " ".join(comment), parent=member, parser=griffe.Parser.google,
            )


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)


def convert(text: str, obj: griffe.Object) -> str:
    """Return ``text`` with math blocks, roles and reference lists in Markdown."""
    text = _math_blocks(text)
    text = _references(text)
    return ROLE.sub(lambda match: _role(match.group(1), match.group(2), obj), text)


def _math_blocks(text: str) -> str:
    """Replace each ``.. math::`` directive and its indented body with a ``$$`` block."""
    lines = text.split("\n")
    output: list[str] = []
    i = 0
    while i < len(lines):
        match = MATH_DIRECTIVE.match(lines[i])
        if match is None:
            output.append(lines[i])
            i += 1
            continue
        indent = match.group("indent")
        body = [match.group("first")] if match.group("first").strip() else []
        i += 1
        # The body is every following line that is blank or indented deeper.
        while i < len(lines) and (
            not lines[i].strip() or _width(lines[i]) > len(indent.expandtabs())
        ):
            body.append(lines[i])
            i += 1
        formula = textwrap.dedent("\n".join(body)).strip()
        output.extend(["", f"{indent}$$", *(indent + line for line in formula.split("\n")),
                       f"{indent}$$", ""])
    return "\n".join(output)


def _width(line: str) -> int:
    return len(line.expandtabs()) - len(line.expandtabs().lstrip())


def _references(text: str) -> str:
    """Turn the indented lines under ``References:`` into a Markdown list.

    A new entry starts after a blank line or after a line that ends with a URL, so both
    one-line entries and entries wrapped over several lines come out whole.
    """
    lines = text.split("\n")
    for start, line in enumerate(lines):
        if line.strip() == "References:":
            break
    else:
        return text
    indent = line[: len(line) - len(line.lstrip())]
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _width(lines[end]) > len(indent)):
        end += 1
    entries: list[list[str]] = [[]]
    for body_line in lines[start + 1 : end]:
        stripped = body_line.strip()
        if not stripped:
            entries.append([])
            continue
        entries[-1].append(stripped)
        if re.search(r"https?://\S+$", stripped):
            entries.append([])
    items = [URL.sub(r"<\1>", " ".join(entry)) for entry in entries if entry]
    block = [f"{indent}**References**", ""] + [f"{indent}- {item}" for item in items] + [""]
    return "\n".join(lines[:start] + block + lines[end:])


def _role(role: str, target: str, obj: griffe.Object) -> str:
    if role == "math":
        return f"${target.strip()}$"
    shown_short = target.startswith("~")
    name = target.lstrip("~.")
    text = name.rsplit(".", 1)[-1] if shown_short else name
    path = _resolve(name, obj)
    if path is None:
        if name.startswith("flowfit."):
            logger.warning("%s: the reference %r does not resolve.", obj.path, target)
        return f"`{text}`"
    return f"[`{text}`][{path}]"


def _resolve(name: str, obj: griffe.Object) -> str | None:
    """Return the documented path of a public flowfit object named ``name``, else None."""
    found = _lookup(name, obj)
    if found is None or not found.startswith("flowfit."):
        return None
    # Every step of the documented path must be public, or the object has no page.
    steps = _follow(obj.modules_collection["flowfit"], found.split(".")[1:])
    if steps is None or not all(step.is_public for step in steps):
        return None
    return found


def _lookup(name: str, obj: griffe.Object) -> str | None:
    """Return the documented path of ``name``, absolute or relative to ``obj``'s scopes."""
    head, _, rest = name.partition(".")
    parts = [head, *filter(None, rest.split("."))]
    scope: griffe.Object | None = obj
    while scope is not None:
        if head in _members(scope):
            return _documented_path(scope, parts)
        scope = scope.parent
    if head == "flowfit":
        return _documented_path(obj.modules_collection["flowfit"], parts[1:])
    return None


def _members(node: griffe.Object) -> dict:
    return node.all_members if node.is_class else node.members


def _follow(scope: griffe.Object, parts: list[str]) -> list[griffe.Object] | None:
    """Return the objects on the path ``parts`` below ``scope``, or None if one is missing.

    Imports are followed to their targets. Members inherited from a base class stay
    in the class they were looked up in, because mkdocstrings documents them there.
    """
    steps: list[griffe.Object] = []
    node = scope
    try:
        for part in parts:
            member = _members(node)[part]
            if member.is_alias and not getattr(member, "inherited", False):
                member = member.final_target
            steps.append(member)
            node = member.final_target if member.is_alias else member
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return steps


def _documented_path(scope: griffe.Object, parts: list[str]) -> str | None:
    steps = _follow(scope, parts)
    if steps is None:
        return None
    # An inherited member is an alias placed in the subclass, so its own path is the
    # documented one. _follow replaced every other alias by its target.
    return steps[-1].path if steps else scope.path
