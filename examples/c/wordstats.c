/* A WASI job in C: read text on stdin, print its line, word and byte counts, its FNV-1a hash
   and the mean word length. Build with ./build.sh (Debian's clang, lld and wasi-libc). */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>

int main(void) {
    unsigned long lines = 0, words = 0, bytes = 0, letters = 0;
    uint64_t hash = 0xcbf29ce484222325ULL;
    int in_word = 0, c;
    while ((c = getchar()) != EOF) {
        bytes++;
        hash = (hash ^ (uint8_t)c) * 0x100000001b3ULL;
        if (c == '\n') lines++;
        if (isspace(c)) {
            in_word = 0;
        } else {
            letters++;
            if (!in_word) words++;
            in_word = 1;
        }
    }
    double mean = words ? (double)letters / (double)words : 0.0;
    printf("lines %lu words %lu bytes %lu fnv1a %016llx mean_word %.6f\n", lines, words, bytes,
           (unsigned long long)hash, mean);
    return 0;
}
