/* check.c - placeholder until conf lands */
#include <stdio.h>
#include "conf/conf.h"
int conf_check_main(int argc, char **argv) { (void)argc; (void)argv; fputs("not built yet\n", stderr); return 1; }
