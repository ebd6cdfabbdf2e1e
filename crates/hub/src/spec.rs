//! `org/name[@revision]`: the hub id part of a `--model` argument.

/// A model on the hub, at a branch, tag or commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// A branch or tag name, or a 40-hex commit (`main` when the spec gives none).
    pub revision: String,
}

impl HubId {
    /// Reads `org/name` or `org/name@revision`; `None` when `spec` is not of that form.
    pub fn parse(spec: &str) -> Option<HubId> {
        let (repo, revision) = match spec.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (spec, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let revision_ok = !revision.is_empty()
            && !revision.chars().any(|c| c.is_whitespace() || c == '\\')
            && revision
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        (is_name(org) && is_name(name) && repo.len() <= 96 && revision_ok).then(|| HubId {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The revision when it is a full commit hash (no lookup needed).
    pub fn commit(&self) -> Option<&str> {
        is_commit_hash(&self.revision).then_some(self.revision.as_str())
    }
}

/// A part of a repo id as the hub allows it: letters, digits, `-`, `_`, `.`; not starting or
/// ending with `-` or `.`, and no `--` or `..`.
fn is_name(part: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    part.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge_ok(part.chars().next())
        && edge_ok(part.chars().last())
        && !part.contains("--")
        && !part.contains("..")
}

/// 40 lowercase hex digits, as huggingface_hub recognises a commit.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_and_revisions() {
        let id = HubId::parse("nlpai-lab/KoE5").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("nlpai-lab/KoE5", "main")
        );
        let id = HubId::parse("dragonkue/multilingual-e5-small-ko@v1.0").unwrap();
        assert_eq!(id.revision, "v1.0");
        assert_eq!(id.commit(), None);
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            HubId::parse(&format!("a/b@{sha}")).unwrap().commit(),
            Some(sha)
        );
        assert_eq!(HubId::parse("a/b@refs/pr/1").unwrap().revision, "refs/pr/1");
    }

    #[test]
    fn refuses_paths_and_malformed_ids() {
        for spec in [
            "KoE5",
            "./models/KoE5",
            "/abs/path",
            "a/b/c",
            "~/models",
            "a/b@",
            "a/b@../x",
            "-a/b",
            "a--x/b",
            "a/b.",
            "a b/c",
            "",
        ] {
            assert_eq!(HubId::parse(spec), None, "{spec}");
        }
    }
}
