//! The `Link` header (RFC 8288), as GitHub uses it for pagination:
//!
//! ```text
//! Link: <https://api.github.com/repositories/1300192/issues?page=2>; rel="next",
//!       <https://api.github.com/repositories/1300192/issues?page=5>; rel="last"
//! ```

/// One link of a `Link` header: a target and its relation types.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    /// The target, exactly as written between `<` and `>` (possibly relative).
    pub url: String,
    /// The relation types, lowercased (`rel="next last"` gives two).
    pub rels: Vec<String>,
}

impl Link {
    /// Whether the link has relation type `rel` (compared case-insensitively).
    pub fn has_rel(&self, rel: &str) -> bool {
        self.rels.iter().any(|r| r.eq_ignore_ascii_case(rel))
    }
}

/// Parses a `Link` header value into its links, in order.
///
/// Pure and total: it never panics and never fails. What it cannot make sense of is skipped,
/// one link at a time, so one malformed link does not hide the others: a link without `<...>`,
/// an unterminated `<`, junk between parameters. Quoted parameter values may contain `,` and
/// `;` and backslash escapes; commas inside `<...>` belong to the URL. Only the first `rel`
/// parameter of a link counts (RFC 8288 section 3.3); a link without one has no relation types.
///
/// ```
/// use egress_vendors::github::parse_link_header;
/// let links = parse_link_header(
///     r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#,
/// );
/// assert_eq!(links.len(), 2);
/// assert!(links[0].has_rel("next"));
/// assert_eq!(links[0].url, "https://api.github.com/x?page=2");
/// assert!(parse_link_header("garbage; rel=next").is_empty());
/// ```
pub fn parse_link_header(value: &str) -> Vec<Link> {
    let mut cursor = Cursor { rest: value };
    let mut links = Vec::new();
    loop {
        cursor.skip_while(|c| c == ',' || c.is_whitespace());
        match cursor.peek() {
            None => return links,
            Some('<') => {
                cursor.bump();
            }
            Some(_) => {
                // Not a link: skip to the next one.
                cursor.skip_link_value();
                continue;
            }
        }
        let Some(url) = cursor.take_until('>') else {
            // An unterminated `<`: nothing after it can be trusted.
            return links;
        };
        let url = url.trim().to_owned();
        let mut rels = None;
        loop {
            cursor.skip_while(char::is_whitespace);
            match cursor.peek() {
                Some(';') => {
                    cursor.bump();
                }
                Some(',') | None => break,
                Some(_) => {
                    // Junk after the target or a parameter: drop this link.
                    cursor.skip_link_value();
                    rels = Some(Err(()));
                    break;
                }
            }
            cursor.skip_while(char::is_whitespace);
            let name = cursor.take_token();
            cursor.skip_while(char::is_whitespace);
            let param_value = if cursor.peek() == Some('=') {
                cursor.bump();
                cursor.skip_while(char::is_whitespace);
                if cursor.peek() == Some('"') {
                    cursor.bump();
                    cursor.take_quoted()
                } else {
                    cursor.take_token().to_owned()
                }
            } else {
                String::new()
            };
            if name.eq_ignore_ascii_case("rel") && rels.is_none() {
                rels = Some(Ok(param_value
                    .split_ascii_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect()));
            }
        }
        match rels {
            Some(Err(())) => {}
            Some(Ok(rels)) => links.push(Link { url, rels }),
            None => links.push(Link {
                url,
                rels: Vec::new(),
            }),
        }
    }
}

/// The target of the first link with relation type `rel` among all the `Link` header values
/// (a response may repeat the header).
pub fn find_rel<'a>(values: impl IntoIterator<Item = &'a str>, rel: &str) -> Option<String> {
    values
        .into_iter()
        .flat_map(parse_link_header)
        .find(|link| link.has_rel(rel))
        .map(|link| link.url)
}

/// A position in the header value. Every step moves by whole characters, so slicing is always
/// on a character boundary.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.rest = &self.rest[c.len_utf8()..];
        }
    }

    fn skip_while(&mut self, keep: impl Fn(char) -> bool) {
        let end = self.rest.find(|c| !keep(c)).unwrap_or(self.rest.len());
        self.rest = &self.rest[end..];
    }

    /// Everything up to `end` (consumed, not returned), or `None` when `end` never comes.
    fn take_until(&mut self, end: char) -> Option<&'a str> {
        let at = self.rest.find(end)?;
        let taken = &self.rest[..at];
        self.rest = &self.rest[at + end.len_utf8()..];
        Some(taken)
    }

    /// A parameter name or unquoted value: up to whitespace, `=`, `;` or `,`.
    fn take_token(&mut self) -> &'a str {
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | ';' | ','))
            .unwrap_or(self.rest.len());
        let taken = &self.rest[..end];
        self.rest = &self.rest[end..];
        taken
    }

    /// The rest of a quoted string (the opening quote already consumed), unescaped. An
    /// unterminated string runs to the end.
    fn take_quoted(&mut self) -> String {
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return out;
                }
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        out.push(escaped);
                    }
                }
                c => out.push(c),
            }
        }
        self.rest = "";
        out
    }

    /// Skips to the `,` that ends the current link value, stepping over quoted strings and
    /// `<...>` targets.
    fn skip_link_value(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ',' => return,
                '"' => {
                    self.bump();
                    self.take_quoted();
                }
                '<' => {
                    self.bump();
                    if self.take_until('>').is_none() {
                        self.rest = "";
                    }
                }
                _ => self.bump(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(header: &str) -> Vec<(String, Vec<String>)> {
        parse_link_header(header)
            .into_iter()
            .map(|l| (l.url, l.rels))
            .collect()
    }

    fn one(url: &str, rel: &[&str]) -> (String, Vec<String>) {
        (
            url.to_owned(),
            rel.iter().map(|r| (*r).to_owned()).collect(),
        )
    }

    #[test]
    fn githubs_four_pagination_links_parse_in_order() {
        let header = concat!(
            r#"<https://api.github.com/repositories/1300192/issues?page=2>; rel="prev", "#,
            r#"<https://api.github.com/repositories/1300192/issues?page=4>; rel="next", "#,
            r#"<https://api.github.com/repositories/1300192/issues?page=515>; rel="last", "#,
            r#"<https://api.github.com/repositories/1300192/issues?page=1>; rel="first""#,
        );
        assert_eq!(
            rels(header),
            [
                one(
                    "https://api.github.com/repositories/1300192/issues?page=2",
                    &["prev"]
                ),
                one(
                    "https://api.github.com/repositories/1300192/issues?page=4",
                    &["next"]
                ),
                one(
                    "https://api.github.com/repositories/1300192/issues?page=515",
                    &["last"]
                ),
                one(
                    "https://api.github.com/repositories/1300192/issues?page=1",
                    &["first"]
                ),
            ]
        );
        assert_eq!(
            find_rel([header], "next").as_deref(),
            Some("https://api.github.com/repositories/1300192/issues?page=4")
        );
    }

    #[test]
    fn unquoted_rels_several_rels_and_odd_spacing_are_understood() {
        assert_eq!(rels("<a>;rel=next"), [one("a", &["next"])]);
        assert_eq!(
            rels("  < b > ;  REL = \"Next  Last\" "),
            [one("b", &["next", "last"])]
        );
    }

    #[test]
    fn commas_and_semicolons_inside_targets_and_quotes_do_not_split_links() {
        let header =
            r#"<https://x.example/a,b;c>; title="one, two; three"; rel="next", <d>; rel=last"#;
        assert_eq!(
            rels(header),
            [
                one("https://x.example/a,b;c", &["next"]),
                one("d", &["last"])
            ]
        );
    }

    #[test]
    fn escapes_in_quoted_values_are_unescaped() {
        assert_eq!(rels(r#"<a>; rel="ne\xt""#), [one("a", &["next"])]);
    }

    #[test]
    fn only_the_first_rel_parameter_counts() {
        assert_eq!(
            rels(r#"<a>; rel="next"; rel="last""#),
            [one("a", &["next"])]
        );
    }

    #[test]
    fn a_link_without_rel_has_no_relation_types() {
        assert_eq!(rels(r#"<a>; title="x""#), [one("a", &[])]);
        assert_eq!(find_rel(["<a>"], "next"), None);
    }

    #[test]
    fn malformed_links_are_skipped_and_the_rest_still_parse() {
        assert_eq!(
            rels(r#"junk; rel="next", <b>; rel="last""#),
            [one("b", &["last"])]
        );
        assert_eq!(
            rels(r#"<a> junk; rel="next", <b>; rel=last"#),
            [one("b", &["last"])]
        );
        assert_eq!(
            rels(r#"<a>; rel="next", <unterminated; rel=last"#),
            [one("a", &["next"])]
        );
        // An unterminated quote runs to the end of the header.
        assert_eq!(
            rels(r#"<a>; rel="next, <b>; rel=last"#),
            [one("a", &["next,", "<b>;", "rel=last"])]
        );
    }

    #[test]
    fn empty_and_blank_headers_have_no_links() {
        for header in ["", " ", ",,,", " , "] {
            assert!(parse_link_header(header).is_empty(), "{header:?}");
        }
    }

    #[test]
    fn no_input_of_up_to_five_characters_from_the_tricky_alphabet_panics() {
        // Every string over the characters that drive the parser, and a multi-byte one.
        const ALPHABET: [char; 10] = ['<', '>', ';', ',', '=', '"', '\\', ' ', 'r', 'é'];
        fn all(prefix: &mut String, depth: usize) {
            let _ = parse_link_header(prefix);
            if depth == 0 {
                return;
            }
            for c in ALPHABET {
                prefix.push(c);
                all(prefix, depth - 1);
                prefix.pop();
            }
        }
        all(&mut String::new(), 5);
    }

    #[test]
    fn long_and_multibyte_input_is_handled() {
        let long = "<é>; rel=\"next\", ".repeat(10_000);
        assert_eq!(parse_link_header(&long).len(), 10_000);
        assert_eq!(rels("<ü€>; rel=\"𝄞\""), [one("ü€", &["𝄞"])]);
    }
}
