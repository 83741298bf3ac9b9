//! `tollgate explain`: the decision recorded on a commit, from its trailers or its tollgate note.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot open git repository {path}: {source}")]
    Open { path: String, source: git2::Error },
    #[error("`{rev}` does not name a commit in {path}: {source}")]
    Rev {
        rev: String,
        path: String,
        source: git2::Error,
    },
}

/// The promotion message if `rev` is a tollgate commit, else the decisions in its note, else None.
pub fn explain(repo: &Path, rev: &str) -> Result<Option<String>, ExplainError> {
    let r = git2::Repository::discover(repo).map_err(|source| ExplainError::Open {
        path: repo.display().to_string(),
        source,
    })?;
    let commit = r
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|source| ExplainError::Rev {
            rev: rev.to_string(),
            path: repo.display().to_string(),
            source,
        })?;
    let message = commit.message().unwrap_or_default();
    if crate::git::trailers(message)
        .iter()
        .any(|(k, _)| k == "Tollgate-Decision")
    {
        return Ok(Some(format!("commit {}\n\n{message}", commit.id())));
    }
    for notes_ref in [crate::git::NOTES_REF, "refs/remotes/origin/notes/tollgate"] {
        if let Ok(note) = r.find_note(Some(notes_ref), commit.id()) {
            if let Ok(text) = note.message() {
                return Ok(Some(format!("note on commit {} ({notes_ref})\n\n{text}", commit.id())));
            }
        }
    }
    Ok(None)
}
