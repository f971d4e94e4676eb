# Concatenates INPUTS (files separated by |) into OUTPUT, in that order, each ending with a
# newline: the page's scripts into app.js, its styles into app.css.
#   cmake -DOUTPUT=file -DINPUTS="a|b" -P concat.cmake
string(REPLACE "|" ";" inputs "${INPUTS}")
set(text "")
foreach(input IN LISTS inputs)
  file(READ "${input}" content)
  string(APPEND text "${content}")
  if(NOT content MATCHES "\n$")
    string(APPEND text "\n")
  endif()
endforeach()
# Written whole then renamed, so that an interrupted build never leaves half a file.
file(WRITE "${OUTPUT}.tmp" "${text}")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
