// Small file-system helpers shared by the layers that write files.
#pragma once

// Creates dir and its missing parents (as mkdir -p). -1 with err_set naming the path on failure.
int fs_mkdir_p(const char *dir);
// fsync of a file or directory by path; -1 (errno set) on failure.
int fs_fsync_path(const char *path);
// Copies a file through a temporary name and a rename, so `to` is either the old file or the whole new one.
// -1 with err_set naming the file on failure.
int fs_copy_file(const char *from, const char *to);
