// A one-file pattern, signed by openssl.
{
  run: [
    {
      id: 'hello file',
      check: 'grep -qx hello out/hello.txt',
      change: 'mkdir -p out && echo hello > out/hello.txt',
      remove: 'rm -f out/hello.txt',
    },
  ],
}
