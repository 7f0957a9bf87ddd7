//! Branch and tag globs of a pipeline's top-level `on:` (`release/*`, `v*`, `feature/**`).
//!
//! `*` matches any run of characters within one path segment (no `/`), `**` any run at
//! all (`/` included), `?` one character other than `/`; everything else matches itself.
//! `**/` may also match nothing, so `**/fix` matches `fix` as well as `a/b/fix` (as in
//! `.gitignore` and GitHub Actions filters).
//!
//! Matching is a dynamic program over (pattern token, text position): O(pattern × text)
//! whatever the pattern, so `*a*a*a*…b` against a long name cannot backtrack for ever.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**` not followed by `/`
    Globstar,
    /// `**/`: empty, or anything ending in `/`
    GlobstarSlash,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                let start = i;
                while i < chars.len() && chars[i] == '*' {
                    i += 1;
                }
                if i - start == 1 {
                    out.push(Token::Star);
                } else if chars.get(i) == Some(&'/') {
                    i += 1;
                    out.push(Token::GlobstarSlash);
                } else {
                    out.push(Token::Globstar);
                }
                continue;
            }
            '?' => out.push(Token::One),
            c => out.push(Token::Literal(c)),
        }
        i += 1;
    }
    out
}

/// Whether `text` (a branch or tag name) matches `pattern` (see the module docs).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let n = text.len();
    // cur[j]: the tokens seen so far match text[..j].
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    let mut next = vec![false; n + 1];
    for token in tokens(pattern) {
        match token {
            Token::Literal(c) => {
                next[0] = false;
                for j in 1..=n {
                    next[j] = cur[j - 1] && text[j - 1] == c;
                }
            }
            Token::One => {
                next[0] = false;
                for j in 1..=n {
                    next[j] = cur[j - 1] && text[j - 1] != '/';
                }
            }
            Token::Star => {
                next[0] = cur[0];
                for j in 1..=n {
                    next[j] = cur[j] || (next[j - 1] && text[j - 1] != '/');
                }
            }
            Token::Globstar => {
                next[0] = cur[0];
                for j in 1..=n {
                    next[j] = cur[j] || next[j - 1];
                }
            }
            Token::GlobstarSlash => {
                // Empty, or text[k..j] for some earlier match end k, ending in `/`.
                let mut any_before = false;
                next[0] = cur[0];
                for j in 1..=n {
                    any_before |= cur[j - 1];
                    next[j] = cur[j] || (any_before && text[j - 1] == '/');
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
        if !cur.iter().any(|&m| m) {
            return false;
        }
    }
    cur[n]
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn literals_match_only_themselves() {
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "mainline"));
        assert!(!glob_match("main", "mai"));
        assert!(!glob_match("main", "xmain"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "main"));
        assert!(glob_match("feat.1+x", "feat.1+x"));
        assert!(!glob_match("feat.1", "featx1"));
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(glob_match("release/*", "release/1.0"));
        assert!(glob_match("release/*", "release/"));
        assert!(!glob_match("release/*", "release/1/x"));
        assert!(!glob_match("release/*", "release"));
        assert!(glob_match("v*", "v1.2"));
        assert!(glob_match("v*", "v"));
        assert!(!glob_match("v*", "x1.2"));
        assert!(!glob_match("v*", "v1/2"));
        assert!(glob_match("*", "main"));
        assert!(!glob_match("*", "feature/a"));
        assert!(glob_match("*-rc", "1.0-rc"));
        assert!(glob_match("*/*", "feature/a"));
        assert!(!glob_match("*/*", "feature/a/b"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXcYYb"));
    }

    #[test]
    fn globstar_crosses_segments() {
        assert!(glob_match("**", "feature/a/b"));
        assert!(glob_match("**", ""));
        assert!(glob_match("feature/**", "feature/a/b"));
        assert!(glob_match("feature/**", "feature/a"));
        assert!(!glob_match("feature/**", "feat/a"));
        assert!(glob_match("**/fix", "a/b/fix"));
        assert!(glob_match("**/fix", "fix"));
        assert!(!glob_match("**/fix", "afix"));
        assert!(glob_match("a/**/z", "a/z"));
        assert!(glob_match("a/**/z", "a/b/c/z"));
        assert!(!glob_match("a/**/z", "a/b/cz"));
        assert!(glob_match("a**z", "a/b/z"));
        assert!(glob_match("***", "x/y"));
    }

    #[test]
    fn question_mark_is_one_character_but_not_a_slash() {
        assert!(glob_match("v?", "v1"));
        assert!(!glob_match("v?", "v"));
        assert!(!glob_match("v?", "v12"));
        assert!(!glob_match("a?b", "a/b"));
        assert!(glob_match("r?l/é", "rél/é"));
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        let pattern = "*a".repeat(40) + "b";
        let text = "a".repeat(5000);
        let start = std::time::Instant::now();
        assert!(!glob_match(&pattern, &text));
        assert!(glob_match(&pattern, &(text.clone() + "b")));
        let pattern = "**a".repeat(40) + "b";
        assert!(!glob_match(&pattern, &text));
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "took {:?}", start.elapsed());
    }
}
