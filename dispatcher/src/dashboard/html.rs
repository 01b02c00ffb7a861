//! HTML building blocks for the dashboard: escaping and the page frame.
//! Pages are plain `format!` output; everything that comes from a user
//! (kinds, params, results, errors, ids) goes through [`escape`].

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` is escaped here, `body` must already be HTML.
/// The stylesheet and script are inlined: no build step, no extra request.
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · dispatcher</title>
<style>{css}</style>
</head>
<body>
<header><a href="/">dispatcher</a><form method="post" action="/logout"><button>log out</button></form></header>
<main>
{body}
</main>
<script>{js}</script>
</body>
</html>
"#,
        title = escape(title),
        css = include_str!("dashboard.css"),
        js = include_str!("dashboard.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
