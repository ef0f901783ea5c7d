// Text made safe for the reports' two document formats: HTML (run --html, trace --html, the heap flame
// graph) and Markdown table cells (run --markdown, trace --markdown).

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Escaped text whose `backticked` spans (commands and options) become <code>. */
export function htmlWithCode(text: string): string {
  return escapeHtml(text).replace(/`([^`]+)`/g, '<code>$1</code>');
}

/** Text for one cell of a Markdown table: its pipes escaped, its lines joined. */
export function markdownCell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}
