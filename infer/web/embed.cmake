# Turns one file of the serve page into a C array (cmake -P, called from CMakeLists.txt):
#   -DIN=infer/web/index.html -DOUT=build/web_index_html.c -DNAME=dp_web_index_html
# The page is then part of the binary: no file to find at run time, nothing from a CDN.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR n_bytes "${n_hex} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" body "${body}")
file(WRITE "${OUT}.tmp"
     "/* generated from ${IN} by infer/web/embed.cmake; do not edit */\n#include <stddef.h>\n"
     "const unsigned char ${NAME}[] = {\n${body}0x00};\n"
     "const size_t ${NAME}_len = ${n_bytes};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
