"""A campaign on one screen: `model` builds it from a status (pure), `eta` says when the campaign ends,
`render` draws it as plain lines or Markdown, `live` with rich (imported only where a terminal wants it), and
`columns` gives the status's display strings for `kubectl get tc`."""
