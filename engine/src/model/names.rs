//! Rules for names: Kubernetes DNS-1123 labels, PostgreSQL identifiers, brand ids.

/// A DNS-1123 label: at most 63 characters, lowercase letters, digits and `-`, starting and
/// ending with a letter or digit. Namespaces and components are named this way, which also
/// keeps `..`, `/` and other path tricks out of every name used to build a path.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// An identifier we create in PostgreSQL: lowercase letters, digits and `_`, starting with a
/// letter or `_`, at most 63 bytes (PostgreSQL's NAMEDATALEN - 1; longer names are truncated
/// silently by the server, which would make two roles collide).
pub fn is_pg_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// A brand id: lowercase letters and hyphens, at most 36 characters.
pub fn is_brand_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 36 && id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_reject_path_tricks_and_uppercase() {
        assert!(is_dns_label("oob-consent"));
        assert!(is_dns_label("a1"));
        for bad in ["", "..", "a/b", "-a", "a-", "Oob", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn pg_identifiers_are_lowercase_and_at_most_63_bytes() {
        assert!(is_pg_identifier("api_consent"));
        assert!(is_pg_identifier(&"a".repeat(63)));
        for bad in ["", "1abc", "api-consent", "Api", "a;drop", &"a".repeat(64)] {
            assert!(!is_pg_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn brand_ids_are_lowercase_letters_and_hyphens() {
        assert!(is_brand_id("acme-bank"));
        for bad in ["", "Acme", "acme1", "acme_bank", &"a".repeat(37)] {
            assert!(!is_brand_id(bad), "{bad:?}");
        }
    }
}
