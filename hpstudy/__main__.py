from hpstudy.cli import command

command()
