#include <stdio.h>
int main(void)
{
    puts("corrald");
    return 0;
}
