//! Stop strings over streamed text: text is released as soon as it cannot be the start of a
//! stop string, so a stream never shows a stop string (or a piece of one) that then stops.
#![forbid(unsafe_code)]

/// Holds back the tail of the generated text that could still begin a stop string.
#[derive(Debug, Clone, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already released.
    released: usize,
    stopped: bool,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are never matched; the request parser refuses them).
    pub fn new(stops: Vec<String>) -> StopFilter {
        StopFilter { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), ..StopFilter::default() }
    }

    /// Adds generated text; returns the text that can be released now, and whether a stop
    /// string was found (the text from it on is dropped).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.text.push_str(piece);
        // A new match must end inside the new piece; it may start in held-back text only.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.released.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let found = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min();
        if let Some(at) = found {
            let out = self.text[self.released.min(at)..at].to_string();
            self.released = at;
            self.stopped = true;
            return (out, true);
        }
        let keep = self.held_back();
        let end = self.text.len() - keep;
        let out = self.text[self.released..end].to_string();
        self.released = end;
        (out, false)
    }

    /// Bytes at the end of the text that are a proper prefix of some stop string.
    fn held_back(&self) -> usize {
        let t = &self.text[self.released..];
        self.stops
            .iter()
            .flat_map(|s| (1..s.len().min(t.len() + 1)).rev().find(|&n| s.is_char_boundary(n) && t.ends_with(&s[..n])))
            .max()
            .unwrap_or(0)
    }

    /// The end of generation: whatever is still held back (nothing after a stop).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let out = self.text[self.released..].to_string();
        self.released = self.text.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    /// Feeds `pieces`, returns (all released text, stopped).
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (text, stopped) = f.push(p);
            out.push_str(&text);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&f.finish());
        (out, false)
    }

    #[test]
    fn no_stops_releases_everything_at_once() {
        let mut f = StopFilter::new(vec![]);
        assert_eq!(f.push("Hello"), ("Hello".into(), false));
        assert_eq!(f.finish(), "");
    }

    #[test]
    fn a_stop_split_across_pieces_is_never_released() {
        assert_eq!(run(&["\n\n"], &["Paris", ".\n", "\nNext"]), ("Paris.".into(), true));
        assert_eq!(run(&["END"], &["abc E", "N", "D tail"]), ("abc ".into(), true));
    }

    #[test]
    fn a_held_prefix_that_does_not_complete_is_released() {
        let mut f = StopFilter::new(vec!["END".into()]);
        assert_eq!(f.push("x EN"), ("x ".into(), false));
        assert_eq!(f.push("d"), ("ENd".into(), false));
        assert_eq!(run(&["END"], &["x EN"]), ("x EN".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), true));
        assert_eq!(run(&["lo w", "o"], &["hel", "lo world"]), ("hel".into(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&["ü"], &["日本", "語ü"]), ("日本語".into(), true));
        assert_eq!(run(&["日x"], &["日本"]), ("日本".into(), false));
    }

    #[test]
    fn after_a_stop_nothing_more_comes_out() {
        let mut f = StopFilter::new(vec!["."].into_iter().map(String::from).collect());
        assert_eq!(f.push("a.b"), ("a".into(), true));
        assert_eq!(f.push("more"), (String::new(), true));
        assert_eq!(f.finish(), "");
    }
}
