//! The value types of request fields as OpenAPI schemas: each says in JSON Schema exactly what the
//! handlers accept (the domain's parsers), so a client generated from the document sends only
//! what is accepted. The unit tests below hold every pattern against the parser it describes, and
//! the schemathesis run in the test suite holds the whole document against the live server.

use regex::Regex;
use serde_json::json;
use std::borrow::Cow;
use std::sync::LazyLock;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;

/// What `PhoneNumber::parse_phone_or_jid` accepts: `+` and 8 to 15 digits (not starting with 0),
/// optionally spaced with ` .()-`, or a WhatsApp jid (`34600000000@s.whatsapp.net`).
pub const PHONE_PATTERN: &str =
    r"^[ \t\n\r]*([ .()-]*\+[ .()-]*[1-9]([ .()-]*[0-9]){7,14}[ .()-]*|[1-9][0-9]{7,14}@(s\.whatsapp\.net|c\.us))[ \t\n\r]*$";

/// What `GroupJid::parse` accepts: a group's jid (`120363041234567890@g.us`, or the older
/// `<creator>-<timestamp>@g.us`).
pub const GROUP_JID_PATTERN: &str = r"^[ \t\n\r]*[1-9][0-9]{4,24}(-[1-9][0-9]{4,14})?@g\.us[ \t\n\r]*$";

/// What `ChatId::parse` accepts: a phone number or jid as [`PHONE_PATTERN`], or a group's jid.
pub const CHAT_PATTERN: &str = r"^[ \t\n\r]*([ .()-]*\+[ .()-]*[1-9]([ .()-]*[0-9]){7,14}[ .()-]*|[1-9][0-9]{7,14}@(s\.whatsapp\.net|c\.us)|[1-9][0-9]{4,24}(-[1-9][0-9]{4,14})?@g\.us)[ \t\n\r]*$";

/// What `PhoneNumber::parse` accepts (no jid).
pub const PLAIN_PHONE_PATTERN: &str = r"^[ \t\n\r]*[ .()-]*\+[ .()-]*[1-9]([ .()-]*[0-9]){7,14}[ .()-]*[ \t\n\r]*$";

/// Text with something besides white space, and no NUL character (PostgreSQL stores none).
pub const TEXT_PATTERN: &str = r"^[^\x00]*[^\s\x00][^\x00]*$";

/// Empty, or text as [`TEXT_PATTERN`].
pub const CAPTION_PATTERN: &str = r"^([^\x00]*[^\s\x00][^\x00]*)?$";

/// Any text without a NUL character.
pub const NO_NUL_PATTERN: &str = r"^[^\x00]*$";

/// What `Emoji::parse` accepts: empty (removes a reaction), a keycap, or up to 16 characters none
/// of which is ASCII, a control character or white space, one of them at least U+00A9.
pub const EMOJI_PATTERN: &str = r"^(|[#*0-9]\ufe0f?\u20e3|[\u00a1-\u00a8]*[^\x00-\xa8\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*)$";

/// After `scheme://`: a host name or IP literal, an optional port, and a path, query and
/// fragment of URL characters (anything else percent-encoded). The server holds URLs to this too
/// ([`is_url`]), so the document and the server cannot disagree.
macro_rules! url_rest {
    () => {
        r"://([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/([A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?(\?([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?(#([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$"
    };
}

/// An http or https URL (see [`url_rest`]).
pub const HTTP_URL_PATTERN: &str = concat!("^[Hh][Tt][Tt][Pp][Ss]?", url_rest!());

/// An https URL (see [`url_rest`]).
pub const HTTPS_URL_PATTERN: &str = concat!("^[Hh][Tt][Tt][Pp][Ss]", url_rest!());

/// Whether `value` has the shape of [`HTTP_URL_PATTERN`] (or, with `https_only`, of
/// [`HTTPS_URL_PATTERN`]).
pub fn is_url(value: &str, https_only: bool) -> bool {
    static HTTP: LazyLock<Regex> = LazyLock::new(|| Regex::new(HTTP_URL_PATTERN).expect("a valid pattern"));
    static HTTPS: LazyLock<Regex> = LazyLock::new(|| Regex::new(HTTPS_URL_PATTERN).expect("a valid pattern"));
    if https_only { &HTTPS } else { &HTTP }.is_match(value)
}

/// A `next_cursor` of `/v1/messages` or of a webhook's deliveries: `c` and a list position.
pub const POSITION_CURSOR_PATTERN: &str = r"^c[1-9][0-9]{0,17}$";

/// A string schema: its pattern, description and example (callers add lengths and formats).
fn string(pattern: &str, description: &str, example: serde_json::Value) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).description(Some(description)).examples([example])
}

fn uri() -> Option<SchemaFormat> {
    Some(SchemaFormat::Custom("uri".into()))
}

fn one_of(values: &[&str], description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .examples([json!(values[0])])
        .into()
}

/// A named schema for the document's components, built by `$build`.
macro_rules! named_schema {
    ($(#[$doc:meta])* $name:ident, $build:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $build
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

named_schema!(
    /// A phone number or jid.
    Phone,
    string(
        PHONE_PATTERN,
        "A phone number in international format with a leading + (e.g. +34600000000), or its WhatsApp jid (34600000000@s.whatsapp.net).",
        json!("+34600000000")
    )
    .into()
);

named_schema!(
    /// A chat: a phone number or jid, or a group's jid.
    Chat,
    string(
        CHAT_PATTERN,
        "The chat: a phone number in international format with a leading + (e.g. +34600000000), its WhatsApp jid \
         (34600000000@s.whatsapp.net), or a group's jid (120363041234567890@g.us).",
        json!("+34600000000")
    )
    .into()
);

named_schema!(
    /// A group's jid.
    GroupJid,
    string(GROUP_JID_PATTERN, "A WhatsApp group's jid.", json!("120363041234567890@g.us")).into()
);

named_schema!(
    /// A phone number, without the jid form.
    PlainPhone,
    string(PLAIN_PHONE_PATTERN, "A phone number in international format with a leading +.", json!("+34600000000")).into()
);

named_schema!(
    /// Message text.
    MessageText,
    string(TEXT_PATTERN, "Text, at most 4096 characters, not only white space.", json!("Pedido confirmado"))
        .min_length(Some(1))
        .max_length(Some(domain::message::MAX_TEXT_CHARS))
        .into()
);

named_schema!(
    /// A caption: empty (none) or text.
    Caption,
    string(CAPTION_PATTERN, "Text shown with the file, at most 4096 characters.", json!("Hello")).max_length(Some(domain::message::MAX_TEXT_CHARS)).into()
);

named_schema!(
    /// A message of a chat, named by either of its ids.
    MessageRef,
    string(NO_NUL_PATTERN, "A message of the chat: its `msg_…` id or its WhatsApp id.", json!("msg_xxx")).into()
);

named_schema!(
    /// Free text.
    FreeText,
    string(NO_NUL_PATTERN, "Free text.", json!("Orders")).into()
);

named_schema!(
    /// An emoji, or empty.
    Emoji,
    string(EMOJI_PATTERN, "One emoji (a single grapheme such as 👍 or ❤️); an empty string removes the reaction.", json!("👍"))
        .max_length(Some(16))
        .into()
);

named_schema!(
    /// A public file URL.
    MediaUrl,
    string(HTTP_URL_PATTERN, "A public http(s) URL of the file; the server downloads it when it sends.", json!("https://tu-cdn.com/foto.jpg"))
        .max_length(Some(2048))
        .format(uri())
        .into()
);

named_schema!(
    /// A webhook's URL. (The document served by a server whose operator allows private URLs
    /// admits http too: see `openapi::document`.)
    WebhookUrl,
    string(
        HTTPS_URL_PATTERN,
        "A public https URL that receives the events; its host must resolve to public addresses only.",
        json!("https://example.com/hooks/whatsapp")
    )
    .max_length(Some(2048))
    .format(uri())
    .into()
);

named_schema!(
    /// `archive_policy` values.
    ArchivePolicy,
    one_of(
        &["never", "always", "preserve_if_previously_archived"],
        "What happens to the chat's archived state after sending: `never` (default), `always` or `preserve_if_previously_archived`."
    )
);

named_schema!(
    /// Session engines.
    Engine,
    one_of(
        &["whatsapp", "sim"],
        "The session engine: `whatsapp`, a real number linked by QR or pairing code, or `sim`, the simulated WhatsApp network. \
         Omitted: the server's default (`whatsapp` in production)."
    )
);

named_schema!(
    /// `media_type` values.
    MediaType,
    one_of(&["image", "video", "audio", "document"], "The kind of file; `image` by default.")
);

named_schema!(
    /// Webhook event names.
    WebhookEvent,
    one_of(&domain::webhook::EVENT_TYPES, "An event a webhook subscribes to.")
);

#[cfg(test)]
mod tests {
    use super::*;
    use domain::message::{ArchivePolicy as Policy, Emoji as DomainEmoji, MediaType as Kind, MessageText as Text};
    use domain::phone::PhoneNumber;

    /// Strings over an alphabet that reaches every branch of the patterns (digits, phone
    /// punctuation, jid parts, white space of several kinds, NUL, emoji and their joiners).
    const ALPHABET: &[&str] = &[
        "0",
        "1",
        "3",
        "4",
        "6",
        "9",
        "+",
        " ",
        ".",
        "(",
        ")",
        "-",
        "@",
        "s.whatsapp.net",
        "c.us",
        "a",
        "\t",
        "\n",
        "\u{a0}",
        "\u{2003}",
        "\u{1c}",
        "\0",
        "👍",
        "❤",
        "\u{fe0f}",
        "\u{20e3}",
        "#",
        "\u{200d}",
        "©",
        "¡",
        "é",
        "\u{85}",
    ];

    /// Mostly what phone numbers and jids are made of, with some of everything else.
    const PHONE_ALPHABET: &[&str] = &[
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "+",
        " ",
        "-",
        "(",
        ")",
        ".",
        "@s.whatsapp.net",
        "@c.us",
        "@g.us",
        "\t",
        "\u{a0}",
        "a",
    ];

    fn samples(alphabet: &[&str], count: usize) -> Vec<String> {
        let mut state = 0x5eed_1234_abcd_ef01_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let len = (next() % 20) as usize;
                (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect()
            })
            .collect()
    }

    /// Every value the pattern admits is accepted by the parser (a client that follows the
    /// document is never refused), and the documented examples match.
    fn admits_only_accepted(pattern: &str, alphabet: &[&str], accepted: impl Fn(&str) -> bool, examples: &[&str]) {
        let re = Regex::new(pattern).unwrap();
        for example in examples {
            assert!(re.is_match(example) && accepted(example), "{example:?}");
        }
        let mut admitted = 0;
        for value in samples(alphabet, 200_000) {
            if re.is_match(&value) {
                admitted += 1;
                assert!(accepted(&value), "{pattern} admits {value:?}, which is refused");
            }
        }
        assert!(admitted > 0, "{pattern} admitted none of the samples");
    }

    #[test]
    fn phones_the_document_admits_are_accepted() {
        let accepted = |v: &str| PhoneNumber::parse_phone_or_jid(v).is_ok();
        admits_only_accepted(
            PHONE_PATTERN,
            PHONE_ALPHABET,
            accepted,
            &["+34600000000", "+34 600-000.000", "34600000000@s.whatsapp.net"],
        );
        admits_only_accepted(
            PLAIN_PHONE_PATTERN,
            PHONE_ALPHABET,
            |v| PhoneNumber::parse(v).is_ok(),
            &["+34600000000", " +1 (415) 555-0100"],
        );
        let re = Regex::new(PHONE_PATTERN).unwrap();
        for refused in ["34600000000", "+0600000000", "+3460", "+34600000000@c.us", "x@s.whatsapp.net", "120363041234567890@g.us"]
        {
            assert!(!re.is_match(refused) && !accepted(refused), "{refused}");
        }
    }

    #[test]
    fn chats_and_groups_the_document_admits_are_accepted() {
        use domain::chat_id::{ChatId, GroupJid as Group};
        let chat = |v: &str| ChatId::parse(v).is_ok();
        let examples = ["+34600000000", "34600000000@s.whatsapp.net", "120363041234567890@g.us", "34600000000-1577836800@g.us"];
        admits_only_accepted(CHAT_PATTERN, PHONE_ALPHABET, chat, &examples);
        admits_only_accepted(GROUP_JID_PATTERN, PHONE_ALPHABET, |v| Group::parse(v).is_some(), &examples[2..]);
        let re = Regex::new(CHAT_PATTERN).unwrap();
        for refused in ["1234@g.us", "0123456789@g.us", "abc@g.us", "12345678-@g.us", "+34600000000@g.us"] {
            assert!(!re.is_match(refused) && !chat(refused), "{refused}");
        }
    }

    #[test]
    fn texts_and_emoji_the_document_admits_are_accepted() {
        // NUL is refused in every body before any field is read.
        let text = |v: &str| Text::parse(v).is_ok() && !v.contains('\0');
        admits_only_accepted(TEXT_PATTERN, ALPHABET, text, &["Pedido confirmado", " hola "]);
        assert!(!Regex::new(TEXT_PATTERN).unwrap().is_match(" \t\n"));
        let emoji = |v: &str| DomainEmoji::parse(v).is_ok() && v.chars().count() <= 16;
        admits_only_accepted(
            EMOJI_PATTERN,
            ALPHABET,
            emoji,
            &["", "👍", "❤\u{fe0f}", "👨\u{200d}👩\u{200d}👧", "1\u{fe0f}\u{20e3}"],
        );
        assert!(!Regex::new(EMOJI_PATTERN).unwrap().is_match("ok"));
    }

    #[test]
    fn urls_the_document_admits_are_http_urls_with_a_host() {
        let http =
            |v: &str| reqwest::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        for url in ["https://tu-cdn.com/foto.jpg", "http://10.0.0.1:8080/a?b=c", "HTTPS://A.B/%20x", "https://[::1]/h#x"] {
            assert!(is_url(url, false) && http(url), "{url}");
        }
        for refused in ["ftp://a.b/c", "https:///x", "https://a b/", "https://a.b/\0", "https://a.b*", "https://a.b/%zz"] {
            assert!(!is_url(refused, false), "{refused}");
        }
        assert!(!is_url("http://a.b/", true) && is_url("https://a.b/", true));
    }

    #[test]
    fn enums_list_exactly_what_the_parsers_accept() {
        for v in ["never", "always", "preserve_if_previously_archived"] {
            assert!(Policy::parse(v).is_some(), "{v}");
        }
        for v in ["image", "video", "audio", "document"] {
            assert!(Kind::parse(v).is_some(), "{v}");
        }
        assert!(Policy::parse("sometimes").is_none() && Kind::parse("gif").is_none());
    }
}

named_schema!(
    /// A file's bytes (a binary response body).
    Binary,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary)))
        .description(Some("The file's bytes; `Content-Type` says what it is."))
        .into()
);
