"""Checking a `$regex` the way MongoDB will run it: PCRE syntax, and no catastrophic backtracking.

MongoDB matches `$regex` with PCRE (PCRE 8 up to MongoDB 6.0, PCRE2 from 7.0), not with Python's `re`:
`\\p{L}` is valid there and `\\u0041` is not. `check_regex` compiles the pattern with PCRE2 (the `pcre2`
binding, with its Python-style `\\uhhhh` extension turned off, so it refuses what PCRE refuses), and then
walks the pattern once to refuse

* a repeated group that itself holds an unbounded quantifier, such as `(a+)+`, `(.*a){25}` or
  `(\\w+\\s?)*`: a backtracking engine can take exponential time on a subject that almost matches, and
  MongoDB's PCRE then gives up silently and reports no match;
* syntax newer than the PCRE of the MongoDB versions this server supports (so MongoDB would refuse a
  pattern PCRE2 10.4x accepts): variable-length lookbehind, `\\N{U+hhhh}`, `(?^)`, `(*pla:…)` style
  assertions, non-atomic lookarounds, option letters other than `imsxJUX`, Unicode properties written
  `\\p{sc=…}`, and NUL characters.

What is still slow without nesting (alternatives that overlap, such as `(a|aa)+`) is stopped by
`FILTER_MAX_TIME_MS` on the query instead. A few patterns that MongoDB accepts are refused as well:
`\\C` (one code unit, which PCRE2 builds here disable) and `\\Q` without `\\E`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pcre2
import pcre2._cy as pcre2_compiler

__all__ = ["check_regex"]

# PCRE2 compile options (pcre2.h). The binding always adds ALT_BSUX (`\uhhhh` as in Python), which PCRE
# itself does not have: it is passed as an option to turn off.
_ALT_BSUX = 0x00000002
_OPTIONS = {
    "i": pcre2.IGNORECASE.value,
    "m": pcre2.MULTILINE.value,
    "s": pcre2.DOTALL.value,
    "x": pcre2.VERBOSE.value,
}
_UTF = pcre2.UNICODE.value

#: `{n}`, `{n,}`, `{n,m}` and PCRE2's `{,m}`; anything else after `{` is a literal brace.
_BRACES = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")
#: Inline option settings `(?i)`, `(?-i)`, `(?i:` … (letters, then `)` or `:`).
_INLINE_OPTIONS = re.compile(r"\(\?([A-Za-z^-]+)([:)])")
_PCRE_OPTION_LETTERS = frozenset("imsxJUX-")
#: A Unicode property name as PCRE 8 spells it: `L`, `Lu`, `L&`, `Greek`, `Xan`, `Old_Italic`.
_PROPERTY = re.compile(r"\^?[A-Z][A-Za-z_]*&?")
#: `(*pla:`, `(*atomic:`, `(*napla:` … the alphabetic assertions of PCRE2 10.34+.
_ALPHA_ASSERTION = re.compile(r"\(\*[a-z_]+:")
#: The opening of a group up to its content: `(?:`, `(?=`, `(?<=`, `(?>`, `(?|`, `(?<name>`, `(?'name'`…
#: (`(?(` stops before the condition, which is read as a group of its own).
_GROUP_OPENER = re.compile(r"\((?:\?(?:<[=!]|[:=!>|]|P?<\w+>|'\w+'|(?=\())?)?")
_LEADING_VERBS = re.compile(r"(?:\(\*[A-Z_]+(?:=\d+)?\))*")


@dataclass
class _Group:
    """A group being read: whether it holds an unbounded quantifier, and whether it is a lookbehind."""

    lookbehind: bool = False
    unbounded_inside: bool = False
    branches: list[str] = field(default_factory=list)


def check_regex(pattern: str, options: str = "") -> str | None:
    """Why MongoDB would refuse (or should not run) `pattern` with `$options` `options`, as a phrase
    that follows "invalid regular expression at <path>: "; None if it is fine."""
    if "\x00" in pattern:
        return "it must not contain a NUL character"
    flags = _UTF
    for letter in options:
        flags |= _OPTIONS.get(letter, 0)
    problem = _compile(pattern, flags)
    if problem is None:
        # MongoDB parses the pattern inside a group as well: a `\Q` or an extended-mode `#` comment that
        # runs to the end of the pattern swallows the closing parenthesis there ("missing )").
        verbs = _LEADING_VERBS.match(pattern)
        head = verbs.group(0) if verbs else ""
        if _compile(f"{head}(?:{pattern[len(head) :]})", flags) is not None:
            problem = "a \\Q without \\E, or a # comment that runs to the end, is not supported by MongoDB"
    return problem or _Scanner(pattern, extended="x" in options).scan()


def _compile(pattern: str, flags: int) -> str | None:
    try:
        pcre2_compiler.compile(pattern, flags, _ALT_BSUX)
    except pcre2.PatternError as exc:
        # "compilation failed at position 9; missing closing parenthesis" -> "missing closing … (at 9)"
        where, _, reason = str(exc).partition("; ")
        position = where.rsplit(" ", 1)[-1]
        return f"{reason} (at character {position})" if reason and position.isdigit() else str(exc)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        return str(exc) or type(exc).__name__
    return None


class _Scanner:
    """One pass over a pattern PCRE2 compiled, tracking groups and quantifiers (not a full parser: it
    only needs to know what each quantifier applies to)."""

    def __init__(self, pattern: str, *, extended: bool) -> None:
        self.p = pattern
        self.extended = extended
        self.stack: list[_Group] = [_Group()]
        #: What the next quantifier applies to: None (nothing repeatable), or whether it holds an
        #: unbounded quantifier.
        self.atom: bool | None = None

    def scan(self) -> str | None:
        p, i = self.p, 0
        try:
            while i < len(p):
                i = self._step(i)
        except _Refused as refused:
            return str(refused)
        return None

    def _step(self, i: int) -> int:
        p, c = self.p, self.p[i]
        if c == "\\":
            return self._escape(i)
        if c == "[":
            self.atom = False
            return self._char_class(i)
        if c == "(":
            return self._open(i)
        if c == ")":
            group = self.stack.pop() if len(self.stack) > 1 else _Group()
            self.stack[-1].unbounded_inside |= group.unbounded_inside
            self.atom = group.unbounded_inside
            return i + 1
        if c == "|":
            self.atom = None
            return i + 1
        if self.extended and c.isspace():
            return i + 1
        if self.extended and c == "#":
            end = p.find("\n", i)
            return len(p) if end < 0 else end + 1
        if c in "*+?":
            return self._quantifier(i + 1, 0 if c != "+" else 1, None if c != "?" else 1)
        if c == "{":
            braces = _BRACES.match(p, i)
            if braces and (braces.group(1) or braces.group(3)):
                low = int(braces.group(1) or 0)
                if braces.group(2) is None:
                    high: int | None = low
                else:
                    high = int(braces.group(3)) if braces.group(3) else None
                return self._quantifier(braces.end(), low, high)
        self.atom = False
        return i + 1

    def _quantifier(self, i: int, low: int, high: int | None) -> int:
        p = self.p
        possessive = i < len(p) and p[i] == "+"
        if i < len(p) and p[i] in "+?":
            i += 1
        group = self.stack[-1]
        if group.lookbehind and high != low:
            raise _Refused("a lookbehind must have a fixed length (no *, +, ? or {n,m} inside it)")
        repeats = high is None or high > 1
        if repeats and self.atom and not possessive:
            raise _Refused(
                "nested quantifiers: a repeated group holds an unbounded quantifier (as in (a+)+ or"
                " (.*a){25}), which can make MongoDB backtrack for seconds; rewrite it without the nesting"
            )
        if high is None:
            group.unbounded_inside = True
        self.atom = None
        return i

    def _escape(self, i: int) -> int:
        p = self.p
        if i + 1 >= len(p):
            return len(p)
        c = p[i + 1]
        if c == "Q":
            end = p.find("\\E", i + 2)
            self.atom = False
            return len(p) if end < 0 else end + 2
        if c == "N" and p.startswith("{", i + 2):
            raise _Refused("\\N{…} is not supported by MongoDB's PCRE; write the character itself or \\x{hh}")
        if c in "pP":
            if p.startswith("{", i + 2):
                end = p.find("}", i + 2)
                name = p[i + 3 : end]
                if not _PROPERTY.fullmatch(name):
                    raise _Refused(
                        f"Unicode property \\{c}{{{name}}} is not supported by MongoDB's PCRE; use a name"
                        " such as \\p{L}, \\p{Lu} or \\p{Greek}"
                    )
                self.atom = False
                return end + 1
            self.atom = False
            return i + 3
        if c in "xogk" and i + 2 < len(p) and p[i + 2] in "{<'":
            closer = {"{": "}", "<": ">", "'": "'"}[p[i + 2]]
            end = p.find(closer, i + 3)
            self.atom = False
            return len(p) if end < 0 else end + 1
        self.atom = False
        return i + 2

    def _char_class(self, i: int) -> int:
        p, j = self.p, i + 1
        if j < len(p) and p[j] == "^":
            j += 1
        if j < len(p) and p[j] == "]":  # a leading ] is a literal
            j += 1
        while j < len(p) and p[j] != "]":
            if p[j] == "\\":
                if p.startswith("Q", j + 1):
                    end = p.find("\\E", j + 2)
                    j = len(p) if end < 0 else end + 2
                    continue
                if j + 1 < len(p) and p[j + 1] in "pP" and p.startswith("{", j + 2):
                    end = self._escape(j)
                    j = end
                    continue
                j += 2
                continue
            if p.startswith("[:", j) or p.startswith("[=", j) or p.startswith("[.", j):
                end = p.find(p[j + 1] + "]", j + 2)
                j = j + 1 if end < 0 else end + 2
                continue
            j += 1
        return j + 1

    def _open(self, i: int) -> int:
        p = self.p
        rest = p[i : i + 12]
        if rest.startswith("(*"):
            if _ALPHA_ASSERTION.match(p, i):
                raise _Refused(f"{rest.split(':')[0]}:…) assertions are not supported by MongoDB's PCRE")
            end = p.find(")", i)
            self.atom = None
            return len(p) if end < 0 else end + 1
        if rest.startswith("(?#"):
            end = p.find(")", i)
            return len(p) if end < 0 else end + 1
        if rest.startswith(("(?^", "(?*", "(?<*")):
            raise _Refused(f"{rest[:4]}… is not supported by MongoDB's PCRE")
        options = _INLINE_OPTIONS.match(p, i)
        if options and not options.group(1).startswith(("P", "R", "C")):
            letters = options.group(1)
            unknown = sorted(set(letters) - _PCRE_OPTION_LETTERS)
            if unknown:
                raise _Refused(
                    f"inline option {''.join(unknown)!r} is not supported by MongoDB's PCRE (only i, m, s,"
                    " x, J, U, X)"
                )
            if "x" in letters.split("-")[0]:
                self.extended = True
            if options.group(2) == ")":
                self.atom = None
                return options.end()
            self.stack.append(_Group())
            return options.end()
        if re.match(r"\(\?(?:R|[+-]?\d+|&\w+|P>\w+)\)", p[i:]):
            # A call of a group (or of the whole pattern): it may repeat what that group repeats.
            end = p.find(")", i)
            self.atom = True
            return end + 1
        self.stack.append(_Group(lookbehind=rest.startswith(("(?<=", "(?<!"))))
        self.atom = None
        opener = _GROUP_OPENER.match(p, i)
        return opener.end() if opener else i + 1


class _Refused(Exception):
    """Raised by the scanner with the sentence to report."""
