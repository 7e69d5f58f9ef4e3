/* mock.c - placeholder until the mock lands */
#include <stdio.h>
#include "mock/mock.h"
int mock_main(int argc, char **argv) { (void)argc; (void)argv; fputs("not built yet\n", stderr); return 1; }
