//! A minimal Server-Sent Events parser for the CLI's `--wait`: enough of
//! the format for the dispatcher's own streams (`event:` and `data:`
//! lines, blank-line terminated; comments such as keep-alives ignored).

/// One event: its name (`message` when none was given) and data.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Feed it bytes as they arrive; it hands back the events completed.
#[derive(Default)]
pub struct Parser {
    buffer: Vec<u8>,
    name: Option<String>,
    data: Vec<String>,
}

impl Parser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(Event {
                        name: self.name.take().unwrap_or_else(|| "message".into()),
                        data: self.data.join("\n"),
                    });
                }
                self.name = None;
                self.data.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = Some(value.to_string()),
                "data" => self.data.push(value.to_string()),
                _ => {} // comments (`: keep-alive`), `id`, `retry`
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut parser = Parser::default();
        assert!(parser.push(b": keep-alive\n\nevent: sta").is_empty());
        let events = parser.push(b"tus\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(
            events,
            vec![
                Event {
                    name: "status".into(),
                    data: "{\"a\":1}".into()
                },
                Event {
                    name: "message".into(),
                    data: "x\ny".into()
                },
            ]
        );
    }
}
