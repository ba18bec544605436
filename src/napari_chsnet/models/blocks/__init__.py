"""models/blocks"""
