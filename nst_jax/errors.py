"""The one exception type for bad input.

Anything the user can fix (a bad file, a bad config field) raises `UserError`
with a one-line message that names the file or field and the problem. The
command line turns it into that line on stderr and exit status 2, with no
traceback; library users can catch it.
"""


class UserError(Exception):
  """Bad input: the message names the file or field and what is wrong."""

  exit_code = 2
