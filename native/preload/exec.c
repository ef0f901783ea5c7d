/* clipmem-exec: puts limits on itself, then becomes the traced command. Node cannot set rlimits or
 * cgroup membership for a child between fork and exec, so the launcher spawns this helper instead:
 *   clipmem-exec [--as BYTES] [--data BYTES] [--cgroup-procs FILE] [--preload LIB] -- command args...
 * The preload is handed as an argument (not LD_PRELOAD) so that this helper itself is not tracked. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int fail(const char* what, const char* detail) {
  fprintf(stderr, "clipmem-exec: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  return 126;
}

static int set_limit(int resource, const char* text, const char* name) {
  char* end = NULL;
  errno = 0;
  unsigned long long bytes = strtoull(text, &end, 10);
  if (errno || !end || *end) return fail("not a byte count", text);
  struct rlimit limit = {(rlim_t)bytes, (rlim_t)bytes};
  struct rlimit current;
  if (getrlimit(resource, &current) == 0 && current.rlim_max != RLIM_INFINITY && current.rlim_max < limit.rlim_max)
    limit.rlim_max = current.rlim_max; /* an unprivileged process may only lower its hard limit */
  if (limit.rlim_cur > limit.rlim_max) limit.rlim_cur = limit.rlim_max;
  if (setrlimit(resource, &limit) != 0) return fail(name, strerror(errno));
  return 0;
}

int main(int argc, char** argv) {
  int i = 1;
  for (; i < argc && strcmp(argv[i], "--") != 0; i += 2) {
    if (i + 1 >= argc) return fail("option needs a value", argv[i]);
    int status = 0;
    if (strcmp(argv[i], "--as") == 0)
      status = set_limit(RLIMIT_AS, argv[i + 1], "setrlimit(RLIMIT_AS)");
    else if (strcmp(argv[i], "--data") == 0)
      status = set_limit(RLIMIT_DATA, argv[i + 1], "setrlimit(RLIMIT_DATA)");
    else if (strcmp(argv[i], "--cgroup-procs") == 0) {
      int fd = open(argv[i + 1], O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write(fd, "0\n", 2) != 2) status = fail("cannot join the cgroup", argv[i + 1]);
      if (fd >= 0) close(fd);
    } else if (strcmp(argv[i], "--preload") == 0) {
      const char* existing = getenv("LD_PRELOAD");
      size_t size = strlen(argv[i + 1]) + (existing ? strlen(existing) + 2 : 1);
      char* value = malloc(size);
      if (!value) return fail("out of memory", NULL);
      snprintf(value, size, "%s%s%s", argv[i + 1], existing ? ":" : "", existing ? existing : "");
      setenv("LD_PRELOAD", value, 1);
      free(value);
    } else
      status = fail("unknown option", argv[i]);
    if (status) return status;
  }
  if (i + 1 >= argc) return fail("no command after --", NULL);
  execvp(argv[i + 1], argv + i + 1);
  fprintf(stderr, "clipmem-exec: cannot run %s: %s\n", argv[i + 1], strerror(errno));
  return errno == ENOENT ? 127 : 126;
}
